"""Memory kernels: projection with a deterministic z-buffer, voxel fusion, multi-view depth consistency and
per-cell depth statistics.

Call the functions re-exported here; they dispatch to the compiled extension or to the PyTorch reference.
"""

from mirage_env.ops.dispatch import backend_name, cell_stats, depth_consistency, project_zbuffer, segment_fuse
from mirage_env.ops.reference import EMPTY_KEY, INDEX_MASK, bits_to_float, float_bits

__all__ = [
    "EMPTY_KEY",
    "INDEX_MASK",
    "backend_name",
    "bits_to_float",
    "cell_stats",
    "depth_consistency",
    "float_bits",
    "project_zbuffer",
    "segment_fuse",
]
