"""Fused CPU kernels for the explicit SAC update (policies/sac_backprop.py): MLP hidden layers and the
squashed-Gaussian policy head.

Why: after the matrix products, a SAC update on a CPU spends most of its time in memory-bound
elementwise kernels and in the dispatch of many small ops. With ATen, one LayerNorm/tanh hidden layer costs
a bias copy, the layer norm, the per-member affine and the activation forward, and the activation and
layer-norm backward, two products and three reductions backward: ~10 passes over a (E, B, H) tensor, each
with its own dispatch and thread fork. ``native/fused_layers.c`` does each direction in one pass per row
(benchmarks/learner_throughput.py --phases times the update with and without them); the backward of a
layer without LayerNorm also gives its bias gradient in the same pass. A critic's one-output Q head, a
(E, B, H) x (E, H, 1) product that runs far below GEMM speed as a batched matmul, is computed in its last
hidden layer's kernels while each row is in L1: q = h . w + c forward, d w = sum_B dL/dq * h backward. The
actor's tanh-Gaussian head
(clamp, exp, tanh, log-probability; ~14 ATen ops forward, ~15 backward) is one call each way. The math is
the ATen path's, summed in a different order: tests/policies/test_fused_layers.py checks the kernels
against float64 autograd, and the whole-update tests run with and without them.

Contract of every function here: float32 CPU tensors whose last dimension is contiguous; a layer's
pre-activation `z` is (E, B, H) (an ensemble, any strides with stride 1 last) or (N, H) (one network);
bias, gamma and beta are (E, 1, H) per member or (H,) shared. Outputs are new contiguous tensors, except
that `ln_act_forward` writes z + bias into `z` itself (its backward reads it) and `act_forward` writes h
there.

Build: on first use, with the system C compiler (-O3 -march=native -fopenmp), cached per source, compiler
flags, CPU and Python under ``$XDG_CACHE_HOME/robot-stack/native`` (``ROBOT_STACK_CACHE`` overrides), as
the compiled controller tick is. Without a compiler or the vector math library, or with
``ROBOT_STACK_NATIVE=0``, ``available()`` is False and the explicit update uses ATen ops (a warning says
why, once). The kernels use torch's OpenMP runtime and thread count.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

_SOURCE = Path(__file__).with_name("native") / "fused_layers.c"
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-fopenmp", "-shared", "-fPIC",
          "-std=c11"]
ACT_CODES = {"tanh": 0, "relu": 1}

_P, _L, _I, _F = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "rs_ln_act_forward": [_P, _L, _L, _P, _P, _P, _L, _P, _P, _P, _P, _L, _P, _L, _P, _L, _L, _L, _I, _F, _I],
    "rs_ln_act_backward": [_P, _L, _L, _P, _P, _P, _L, _L, _P, _P, _P, _L, _P, _P, _P, _P, _P, _L, _L, _L, _I,
                           _I],
    "rs_act_forward": [_P, _L, _L, _P, _L, _P, _L, _P, _L, _P, _L, _L, _L, _I, _I],
    "rs_act_backward": [_P, _L, _L, _P, _P, _P, _P, _P, _L, _L, _L, _L, _I, _I],
    "rs_tanh_gaussian_forward": [_P, _P, _L, _P, _L, _L, _F, _F, _P, _P],
    "rs_tanh_gaussian_backward": [_P, _L, _P, _P, _P, _F, _L, _L, _F, _F, _P, _P],
}


def _cache_dir() -> Path:
    root = os.environ.get("ROBOT_STACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robot-stack"
    )
    return Path(root) / "native"


def _cpu_signature() -> bytes:
    """-march=native code runs only on CPUs like this one; a cache shared between machines must not mix them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "".join(sorted({ln for ln in lines if ln.startswith(("model name", "flags"))})).encode()
    except OSError:
        return platform.processor().encode()


@cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("ROBOT_STACK_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        if compiler is None:
            raise FileNotFoundError("no C compiler (cc/gcc) on PATH")
        key = hashlib.sha256(_SOURCE.read_bytes() + " ".join([compiler, *_FLAGS]).encode() + _cpu_signature()
                             + sys.version.encode()).hexdigest()[:16]
        target = _cache_dir() / f"fused_layers-{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                subprocess.run([compiler, *_FLAGS, str(_SOURCE), "-o", str(built), "-lm"], check=True,
                               capture_output=True, text=True)
                os.replace(built, target)  # atomic: concurrent builders never load a half-written file
        lib = ctypes.CDLL(str(target))  # fails on a C library without the vector tanhf (glibc < 2.35)
        for name, argtypes in _SIGNATURES.items():
            getattr(lib, name).argtypes = argtypes
            getattr(lib, name).restype = None
        return lib
    except (OSError, subprocess.CalledProcessError) as err:
        detail = err.stderr.strip() if isinstance(err, subprocess.CalledProcessError) else str(err)
        warnings.warn(f"fused CPU layer kernels unavailable, the explicit SAC update uses ATen ops: {detail}",
                      RuntimeWarning, stacklevel=2)
        return None


def available() -> bool:
    """Whether the kernels are built and loadable on this machine."""
    return _library() is not None


def _rows(z: torch.Tensor) -> tuple[int, int, int, int, int]:
    """(E, B, H, member stride, row stride) of an (E, B, H) or (N, H) activation."""
    if z.dtype != torch.float32 or not z.is_cpu:
        raise ValueError(f"fused layer kernels: expected float32 CPU tensors, got {z.dtype} on {z.device}")
    if z.stride(-1) != 1:
        raise ValueError(f"fused layer kernels: last dimension must be contiguous, got strides {z.stride()}")
    if z.dim() == 2:
        n, h = z.shape
        return 1, n, h, 0, z.stride(0)
    e, b, h = z.shape
    se, sb, _ = z.stride()
    return e, b, h, se, sb


def _member_stride(param: torch.Tensor, members: int) -> int:
    """Stride between members' rows of a (E, 1, H) or (H,) parameter (0: shared)."""
    if not param.is_contiguous():
        raise ValueError("fused layer kernels: parameters must be contiguous")
    return param.shape[-1] if members > 1 else 0


def ln_act_forward(
    z: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, act: str, eps: float,
    head: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """h = act(LayerNorm(z + bias) * gamma + beta), the row mean and 1/std of z + bias (`z` becomes z + bias),
    and with `head` = (weight (E, H, 1), bias (E, 1, 1)), a one-output linear layer on h: q = h w + b (E, B),
    else None (a critic's last hidden layer and its Q head, in one pass over each row)."""
    e, b, h_dim, zse, zsb = _rows(z)
    h = torch.empty_like(z) if z.is_contiguous() else torch.empty(z.shape, dtype=torch.float32)  # the cheaper call
    stats = (e, b, 1) if z.dim() == 3 else (b, 1)  # as torch.native_layer_norm returns mean and rstd
    mean, rstd = torch.empty(stats, dtype=torch.float32), torch.empty(stats, dtype=torch.float32)
    q, head_pointers = _head(head, z, e, h_dim)
    _library().rs_ln_act_forward(z.data_ptr(), zse, zsb, bias.data_ptr(), gamma.data_ptr(), beta.data_ptr(),
                                 _member_stride(gamma, e), h.data_ptr(), mean.data_ptr(), rstd.data_ptr(),
                                 *head_pointers, e, b, h_dim, ACT_CODES[act], eps, torch.get_num_threads())
    return h, mean, rstd, q


def _head(head: tuple[torch.Tensor, torch.Tensor] | None, z: torch.Tensor, e: int, h_dim: int) -> tuple:
    """The Q-head output q (z's shape without its last dimension) and the kernel's head arguments (weight, its
    member stride, bias, its member stride, q); NULLs without a head."""
    if head is None:
        return None, (None, 0, None, 0, None)
    weight, bias = head
    if weight.numel() != e * h_dim or bias.numel() != e or not weight.is_contiguous():
        raise ValueError(f"fused layer kernels: head weight must be contiguous ({e}, {h_dim}, 1) and bias "
                         f"({e}, 1, 1), got {tuple(weight.shape)} and {tuple(bias.shape)}")
    q = torch.empty(z.shape[:-1], dtype=torch.float32)
    return q, (weight.data_ptr(), h_dim, bias.data_ptr(), bias.stride(0) if e > 1 else 0, q.data_ptr())


def act_forward(z: torch.Tensor, bias: torch.Tensor, act: str, head: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """h = act(z + bias) for a layer without LayerNorm, written into `z` (returned as h), and with `head` the
    one-output linear layer on h as in `ln_act_forward`, else None."""
    e, b, h_dim, zse, zsb = _rows(z)
    q, head_pointers = _head(head, z, e, h_dim)
    _library().rs_act_forward(z.data_ptr(), zse, zsb, bias.data_ptr(), _member_stride(bias, e), *head_pointers, e, b,
                              h_dim, ACT_CODES[act], torch.get_num_threads())
    return z, q


def _upstream(dh: torch.Tensor, row_scale: torch.Tensor | None, like: torch.Tensor) -> tuple[int, int, int | None]:
    """(member stride, row stride, row-scale pointer) of the upstream gradient `dh` (times `row_scale` (E, B)
    per row when given; then dh may be (E, 1, H), one vector per member) for activations `like`, which must
    be contiguous (the kernels read them row after row)."""
    if not like.is_contiguous():
        raise ValueError(f"fused layer kernels: the activations must be contiguous, got strides {like.stride()}")
    dh = dh.expand(like.shape)
    _rows(dh)  # dtype, device, contiguous last dimension
    if row_scale is None:
        return (0 if dh.dim() == 2 else dh.stride(0)), dh.stride(-2), None
    row_scale = row_scale.contiguous()
    if row_scale.shape != like.shape[:-1] or row_scale.dtype != torch.float32:
        raise ValueError(f"fused layer kernels: row_scale must be float32 {tuple(like.shape[:-1])}, "
                         f"got {row_scale.dtype} {tuple(row_scale.shape)}")
    return (0 if dh.dim() == 2 else dh.stride(0)), dh.stride(-2), row_scale.data_ptr()


def _head_grad(h: torch.Tensor) -> torch.Tensor:
    """The buffer for a one-output head's weight gradient: (E, H, 1) like the critic head's weight, or (H, 1)."""
    return torch.empty((*h.shape[:-2], h.shape[-1], 1), dtype=torch.float32)


def ln_act_backward(
    dh: torch.Tensor, h: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
    gamma: torch.Tensor, act: str, grads: bool, row_scale: torch.Tensor | None = None, head_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """dL/dz for dL/dh = `dh` (times `row_scale` per row, see `_upstream`) through `ln_act_forward` (x: the
    z + bias it left); with `grads` the parameter gradients (d gamma, d beta, d bias), shaped like gamma; with
    `head_grad` too, the weight gradient (E, H, 1) of the one-output head on h whose weights `dh` is and whose
    dL/dq `row_scale` is: sum over rows of row_scale * h (else None)."""
    e, b, h_dim, xse, xsb = _rows(x)
    dhse, dhsb, scale = _upstream(dh, row_scale, h)
    dz = torch.empty_like(h)  # h is contiguous (`_upstream` checks)
    dhead = None
    if grads:
        dgamma, dbeta, dbias = torch.empty((3, *gamma.shape), dtype=torch.float32)  # unpacked: three views
        if head_grad:
            dhead = _head_grad(h)
        pointers = dgamma.data_ptr(), dbeta.data_ptr(), dbias.data_ptr(), None if dhead is None else dhead.data_ptr()
    else:
        dgamma = dbeta = dbias = None
        pointers = None, None, None, None
    _library().rs_ln_act_backward(dh.data_ptr(), dhse, dhsb, scale, h.data_ptr(), x.data_ptr(), xse, xsb,
                                  mean.data_ptr(), rstd.data_ptr(), gamma.data_ptr(), _member_stride(gamma, e),
                                  dz.data_ptr(), *pointers, e, b, h_dim, ACT_CODES[act], torch.get_num_threads())
    return dz, dgamma, dbeta, dbias, dhead


def act_backward(dh: torch.Tensor, h: torch.Tensor, act: str, bias: torch.Tensor | None,
                 row_scale: torch.Tensor | None = None, head_grad: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """dL/dz through h = act(z) (a layer without LayerNorm; dh and row_scale as in `ln_act_backward`), d bias
    (shaped like `bias`: the column sums of dL/dz) when `bias` is given, and with it and `head_grad` the head
    weight gradient of `ln_act_backward` (else None)."""
    e, b, h_dim, _, _ = _rows(h)
    dhse, dhsb, scale = _upstream(dh, row_scale, h)
    dz = torch.empty_like(h)  # h is contiguous (`_upstream` checks)
    dbias = None if bias is None else torch.empty_like(bias)
    dhead = _head_grad(h) if head_grad and bias is not None else None
    _library().rs_act_backward(dh.data_ptr(), dhse, dhsb, scale, h.data_ptr(), dz.data_ptr(),
                               None if dbias is None else dbias.data_ptr(), None if dhead is None else dhead.data_ptr(),
                               0 if bias is None else _member_stride(bias, e), e, b, h_dim, ACT_CODES[act],
                               torch.get_num_threads())
    return dz, dbias, dhead


def _check_rows(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.dtype != torch.float32 or not t.is_cpu or t.stride(-1) != 1:
            raise ValueError(f"fused layer kernels: expected float32 CPU tensors with a contiguous last dimension, "
                             f"got {t.dtype} on {t.device} with strides {t.stride()}")


def tanh_gaussian_forward(head_out: torch.Tensor, eps: torch.Tensor, log_std_min: float,
                          log_std_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SAC's squashed Gaussian from the actor head's (N, 2A) output [mu, log sigma] and noise eps (N, A):
    the action tanh(mu + sigma eps) (N, A) and its log-probability (N,), as `policies.sac.squashed_gaussian`
    with log sigma clamped to [log_std_min, log_std_max]."""
    eps = eps.contiguous()
    _check_rows(head_out, eps)
    n, a = eps.shape
    action, log_prob = torch.empty((n, a), dtype=torch.float32), torch.empty(n, dtype=torch.float32)
    _library().rs_tanh_gaussian_forward(head_out.data_ptr(), head_out[:, a:].data_ptr(), head_out.stride(0),
                                        eps.data_ptr(), n, a, log_std_min, log_std_max, action.data_ptr(),
                                        log_prob.data_ptr())
    return action, log_prob


def tanh_gaussian_backward(head_out: torch.Tensor, eps: torch.Tensor, action: torch.Tensor, d_action: torch.Tensor,
                           d_log_prob: float, log_std_min: float,
                           log_std_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """dL/d head_out (N, 2A) and its column sums (the head bias gradient) for dL/da = `d_action` and
    dL/dlog pi = `d_log_prob` on every row, through `tanh_gaussian_forward` (eps held fixed)."""
    eps, action, d_action = eps.contiguous(), action.contiguous(), d_action.contiguous()
    _check_rows(head_out, eps, action, d_action)
    n, a = eps.shape
    d_out, d_bias = torch.empty((n, 2 * a), dtype=torch.float32), torch.empty(2 * a, dtype=torch.float32)
    _library().rs_tanh_gaussian_backward(head_out[:, a:].data_ptr(), head_out.stride(0), eps.data_ptr(),
                                         action.data_ptr(), d_action.data_ptr(), d_log_prob, n, a, log_std_min,
                                         log_std_max, d_out.data_ptr(), d_bias.data_ptr())
    return d_out, d_bias
