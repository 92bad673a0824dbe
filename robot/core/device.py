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

