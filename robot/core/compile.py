"""Opt-in compilation of a fixed-shape update step.

An update whose tensor shapes never change (batch 256, UTD k, ensemble E) can be captured once and
replayed. Two modes:
- 'compile': `torch.compile` of the loss functions; fuses elementwise kernels (CPU or GPU).
- 'cuda-graph': the whole update (forwards, backwards, optimizer steps, Polyak averaging, for all
  UTD critic steps and the actor/temperature step) recorded once as a CUDA graph and replayed with
  one launch (`GraphedStep`). Small-MLP updates on a GPU are bound by per-kernel launch cost, not by
  arithmetic, and a replay removes that cost for every kernel of the step at once.
Off by default: compilation takes tens of seconds and needs a C++ compiler on CPU; a graph needs CUDA.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import torch


class CompileMode(enum.Enum):
    NONE = "none"
    COMPILE = "compile"
    CUDA_GRAPH = "cuda-graph"


def compile_step(fn: Callable, mode: CompileMode, device: torch.device) -> Callable:
    """`fn` (a loss function), compiled according to `mode`.

    CUDA_GRAPH leaves `fn` as it is: the graph is taken around the whole update (`GraphedStep`), which
    contains the loss; it only checks the device here so a misconfiguration fails at construction.
    """
    if mode is CompileMode.CUDA_GRAPH:
        if device.type != "cuda":
            raise ValueError(f"compile mode 'cuda-graph' needs a CUDA device, got {device}; use 'compile' or 'none'")
        return fn
    if mode is CompileMode.COMPILE:
        return torch.compile(fn, fullgraph=False)
    return fn


TensorTree = Mapping[str, Any]  # str -> Tensor, or str -> nested TensorTree (observation dicts)


class GraphedStep:
    """Run `step(inputs) -> dict of tensors` as a replayed CUDA graph.

    Contract (what makes capture correct, not just fast): every call gets inputs of the same shapes and
    dtypes; `step` does no host synchronisation (.item(), .cpu(), data-dependent shapes) and keeps no
    Python-side state that must change between calls (a learning-rate scheduler, a step counter): only
    tensor work is replayed. Randomness from torch's CUDA generator is replayed with fresh numbers each
    time (PyTorch advances the graph's Philox offset per replay).

    Call 1 runs `step` eagerly on a side stream (it creates optimizer state, cuBLAS workspaces and
    autograd buffers, which must exist before capture). Call 2 copies its inputs into static buffers,
    records the graph and replays it. Later calls copy and replay. Every call is exactly one step.
    Outputs are cloned so a caller may keep them across calls.
    """

    def __init__(self, step: Callable[[TensorTree], dict[str, torch.Tensor]]) -> None:
        self.step = step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: dict | None = None
        self.static_outputs: dict[str, torch.Tensor] | None = None
        self._warmed_up = False

    def __call__(self, inputs: TensorTree) -> dict[str, torch.Tensor]:
        if not self._warmed_up:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = self.step(inputs)
            torch.cuda.current_stream().wait_stream(side)
            self._warmed_up = True
            return outputs
        if self.graph is None:
            self.static_inputs = _clone_tree(inputs)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_outputs = self.step(self.static_inputs)
        else:
            _copy_tree(self.static_inputs, inputs, path="")
        self.graph.replay()
        return {k: v.clone() for k, v in self.static_outputs.items()}


def _clone_tree(tree: TensorTree) -> dict:
    return {k: _clone_tree(v) if isinstance(v, Mapping) else v.clone() for k, v in tree.items()}


def _copy_tree(static: dict, tree: TensorTree, path: str) -> None:
    if static.keys() != tree.keys():
        raise ValueError(f"cuda-graph step{path}: captured keys {sorted(static)}, got {sorted(tree)}")
    for k, dst in static.items():
        src = tree[k]
        if isinstance(dst, dict):
            _copy_tree(dst, src, f"{path}.{k}")
        elif src.shape != dst.shape or src.dtype != dst.dtype:
            raise ValueError(
                f"cuda-graph step{path}.{k}: captured {tuple(dst.shape)} {dst.dtype}, got {tuple(src.shape)} "
                f"{src.dtype}; a graph replays fixed shapes (keep batch_size and utd_ratio constant)"
            )
        else:
            dst.copy_(src, non_blocking=True)
