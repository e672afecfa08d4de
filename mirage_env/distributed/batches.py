"""Splitting N envs into contiguous per-actor ranges and merging the actors' vector infos back."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def env_ranges(num_envs: int, num_actors: int) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` ranges of env indices, one per actor; the first ``num_envs % num_actors`` actors
    hold one env more than the others."""
    if not 1 <= num_actors <= num_envs:
        raise ValueError(f"num_actors must be in [1, num_envs={num_envs}], got {num_actors}")
    sizes = [num_envs // num_actors + (a < num_envs % num_actors) for a in range(num_actors)]
    bounds = np.cumsum([0, *sizes])
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def merge_infos(parts: Sequence[tuple[dict, int, int]], num_envs: int) -> dict:
    """Vector infos of actors (arrays over their envs ``lo:hi``, ``_key`` masks, nested dicts) -> one vector info
    over ``num_envs`` envs, laid out as Gymnasium's vector envs do (zeros, or None for objects, where an env has
    no entry)."""
    by_key: dict[str, list[tuple]] = {}
    for infos, lo, hi in parts:
        for key, value in infos.items():
            by_key.setdefault(key, []).append((value, lo, hi))
    merged: dict = {}
    for key, values in by_key.items():
        first = values[0][0]
        if isinstance(first, dict):
            merged[key] = merge_infos(values, num_envs)
            continue
        shape = (num_envs, *first.shape[1:])
        array = np.full(shape, None, object) if first.dtype == object else np.zeros(shape, first.dtype)
        for value, lo, hi in values:
            array[lo:hi] = value
        merged[key] = array
    return merged
