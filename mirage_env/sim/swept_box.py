"""Swept axis-aligned box against a set of axis-aligned boxes (float64, numpy)."""

from __future__ import annotations

import numpy as np


def segment_free(lo: np.ndarray, hi: np.ndarray, p0, p1, lo_offset, hi_offset) -> bool:
    """True when the box ``[p + lo_offset, p + hi_offset]``, swept from ``p0`` to ``p1``, enters no box's interior.

    ``lo``/``hi`` [N, 3] are the obstacle corners. Touching an obstacle's boundary counts as free.
    """
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    lo_e = lo - np.asarray(hi_offset, dtype=np.float64)  # Minkowski difference: overlap iff lo_e < p < hi_e
    hi_e = hi - np.asarray(lo_offset, dtype=np.float64)
    d = p1 - p0
    moving = np.abs(d) > 1e-12
    inside = (lo_e < p0) & (p0 < hi_e)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (lo_e - p0) / d, (hi_e - p0) / d
    s_in = np.where(moving, np.minimum(t1, t2), np.where(inside, -np.inf, np.inf)).max(-1)
    s_out = np.where(moving, np.maximum(t1, t2), np.where(inside, np.inf, -np.inf)).min(-1)
    return not bool((np.maximum(s_in, 0.0) < np.minimum(s_out, 1.0)).any())
