"""Opt-in compilation of a fixed-shape update step.

An update whose tensor shapes never change (batch 256, UTD k, ensemble E) can be captured once and
replayed: on CUDA `torch.compile(mode="reduce-overhead")` records the step as a CUDA graph, removing
per-kernel launch overhead, which dominates small-MLP updates on a GPU; elsewhere `torch.compile`
fuses elementwise kernels. Off by default: compilation takes tens of seconds and needs a C++ compiler
on CPU, which a quick experiment should not pay for.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch


class CompileMode(enum.Enum):
    NONE = "none"
    COMPILE = "compile"
    CUDA_GRAPH = "cuda-graph"


def compile_step(fn: Callable, mode: CompileMode, device: torch.device) -> Callable:
    """Return `fn`, compiled according to `mode` (CUDA_GRAPH needs a CUDA device)."""
    if mode is CompileMode.NONE:
        return fn
    if mode is CompileMode.CUDA_GRAPH:
        if device.type != "cuda":
            raise ValueError(f"compile mode 'cuda-graph' needs a CUDA device, got {device}; use 'compile' or 'none'")
        return torch.compile(fn, mode="reduce-overhead", fullgraph=False)
    return torch.compile(fn, fullgraph=False)
