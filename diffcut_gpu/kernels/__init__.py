"""CUDA backend: CuPy/NVRTC front for the kernels in ``csrc/``, DLPack zero-copy, backend dispatch.

Importing this package needs neither CuPy nor a GPU: CuPy is imported on first kernel use. Every
``*_cuda`` function has the signature and contract of its torch twin in ``diffcut_gpu.spectral`` /
``diffcut_gpu.attention``; ``select_backend`` (in ``dispatch``) is the only place that picks one.
The kernels are not validated on a GPU yet: see ``dispatch.KERNELS_VALIDATED`` and docs/kernels.md.
"""

from .attention import record_attention_cuda
from .dispatch import cupy_status, requested_backend, select_backend
from .gather import gather_subgraphs_cuda
from .lanczos import choose_strategy, lanczos_fiedler_cuda
from .loader import entry_name, get_kernel, source_files, source_text
from .power import power_walk_cuda, renormalize_rows_cuda
from .sweep import sweep_cut_cuda

__all__ = [
    "choose_strategy",
    "cupy_status",
    "entry_name",
    "gather_subgraphs_cuda",
    "get_kernel",
    "lanczos_fiedler_cuda",
    "power_walk_cuda",
    "record_attention_cuda",
    "renormalize_rows_cuda",
    "requested_backend",
    "select_backend",
    "source_files",
    "source_text",
    "sweep_cut_cuda",
]
