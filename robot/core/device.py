"""Device and precision selection shared by every learner.

One place decides where tensors live and which precision an update runs in, so a SAC critic step and a
language-model policy-gradient step get the same treatment: bf16 autocast on CUDA (where it is fast and
numerically safe for these models), full fp32 on CPU (where bf16 matmuls are slower, not faster).
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Map a user string ("auto", "cpu", "cuda", "cuda:1") to a torch.device, with a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available here; use --device cpu")
    return device


def autocast(device: torch.device, bf16: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when asked for; a no-op context elsewhere."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # mallopt parameters (glibc malloc.h)
RETAINED_BYTES = 64 << 20


def retain_freed_memory() -> bool:
    """Let glibc malloc keep freed tensor memory in the process instead of handing it back to the kernel.

    Why: a CPU learner step allocates and frees the same activation buffers every update (2.6 MB each at
    10 critics, batch 256). With glibc's defaults, whether such a buffer is mmapped, or sits at a heap top
    that is trimmed when freed, depends on what the process allocated before; when it is, the next update
    takes a page fault for every 4 KB it touches again. Measured in the benchmark process: ~5,000 faults
    per 10-critic update of the explicit-backward learner, which made it slower than autograd
    (`python -m benchmarks.learner_throughput --phases --default_malloc`). Raising the mmap and trim
    thresholds to 64 MiB keeps that memory mapped (the process holds at most that much more).
    Process-wide, so `robot.train.build_agent` calls it for every process that runs an agent; a no-op
    returning False off glibc (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, RETAINED_BYTES) == 1 for param in (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD))
