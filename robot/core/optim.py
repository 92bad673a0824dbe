"""The one object that turns a loss into updated weights: `Updater`.

Every learner in robot-stack owns one `Updater` per parameter set (SAC: actor, critic ensemble,
temperature; a language planner: the model). It holds the optimizer, the warmup schedule, gradient
clipping and gradient accumulation, so the mechanics live here once:

    updater = Updater(model.parameters(), OptimConfig(lr=3e-4, grad_clip_norm=1.0))
    updater.update(loss)                      # backward + clip + step, one call
    for micro in micro_batches:               # or, with accumulation (LM post-training):
        updater.backward(loss_fn(micro))      #   loss already normalised by global token count
    updater.step()

`polyak_update` keeps target networks (one fused foreach kernel for any number of tensors).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass
class OptimConfig:
    """Adam settings shared by all learners."""

    lr: float = 3e-4
    """Learning rate (typ. 1e-4 to 1e-3 for RL, 1e-6 to 1e-5 for LM fine-tuning)."""
    beta1: float = 0.9
    """Adam first-moment decay."""
    beta2: float = 0.999
    """Adam second-moment decay."""
    weight_decay: float = 0.0
    """Decoupled weight decay (AdamW); 0 disables."""
    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 disables (and skips the norm computation)."""
    warmup_steps: int = 0
    """Linear learning-rate warmup over this many optimizer steps; 0 disables."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: expected a positive learning rate, got {self.lr}")
        for name in ("grad_clip_norm", "weight_decay", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")


def _adam(params: list[torch.Tensor], config: OptimConfig) -> torch.optim.Optimizer:
    kwargs = dict(lr=config.lr, betas=(config.beta1, config.beta2), weight_decay=config.weight_decay)
    if all(p.is_cuda for p in params):  # step counters on the device: the step can be captured in a CUDA graph
        kwargs["capturable"] = True
    # The fused kernel exists for CPU and CUDA float tensors in recent torch and is ~2x faster than
    # foreach on small MLPs; older versions reject the flag on CPU, so fall back to foreach.
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, foreach=True, **kwargs)


class Updater:
    """Optimizer + schedule + clipping + accumulation for one parameter set."""

    def __init__(self, params: Iterable[torch.Tensor], config: OptimConfig) -> None:
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("Updater: got no trainable parameters")
        self.config = config
        self.optimizer = _adam(self.params, config)
        self._direct = _direct_fused_applies(self.optimizer, self.params)  # see `_direct_fused_step`
        self._fused_state: tuple[list[torch.Tensor], ...] | None = None  # its state tensors, once they exist
        self.scheduler = None
        if config.warmup_steps > 0:
            warmup = config.warmup_steps
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda step: min(1.0, (step + 1) / warmup)
            )

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate gradients of `loss` (call several times before `step` for accumulation)."""
        loss.backward()

    def step(self) -> torch.Tensor | None:
        """Clip, apply and clear the accumulated gradients. Returns the pre-clip grad norm if clipping."""
        grad_norm = None
        if self.config.grad_clip_norm > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip_norm, foreach=True)
        if not self._direct_fused_step():
            self._unshare_steps()
            self.optimizer.step()
            if self._direct and all(p in self.optimizer.state for p in self.params):
                self._fused_state = self._share_steps()
        for p in self.params:  # zero_grad(set_to_none=True) for our one parameter group, without its overhead
            p.grad = None
        if self.scheduler is not None:
            self.scheduler.step()
        return grad_norm

    def update(self, loss: torch.Tensor) -> torch.Tensor | None:
        """One full step: backward, clip, apply."""
        self.backward(loss)
        return self.step()

    def state_dict(self) -> dict:
        optimizer = self.optimizer.state_dict()
        if self._fused_state is not None:  # a shared step counter: every parameter's state gets its own copy
            optimizer["state"] = {i: {**s, "step": s["step"].clone()} for i, s in optimizer["state"].items()}
        state = {"optimizer": optimizer}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        return state

    def _direct_fused_step(self) -> bool:
        """The fused AdamW kernel called directly on the optimizer's own state: the kernel and the numbers of
        `optimizer.step()`, without its Python (hooks, lazy state, grouping by device: ~60 us a call, a tenth
        of a small SAC update on a CPU). Only for CPU parameter sets whose state exists and whose gradients
        are all present; False sends the step through `optimizer.step()`."""
        if self._fused_state is None or any(p.grad is None for p in self.params):
            return False
        exp_avgs, exp_avg_sqs, steps = self._fused_state
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        steps[0].add_(1)  # one counter shared by all (`_share_steps`)
        torch._fused_adamw_(self.params, [p.grad for p in self.params], exp_avgs, exp_avg_sqs, [], steps,
                            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                            eps=group["eps"], amsgrad=False, maximize=False, grad_scale=None, found_inf=None)
        return True

    def _share_steps(self) -> tuple[list[torch.Tensor], ...] | None:
        """The direct step's state lists, with one step tensor serving every parameter: they all step together
        there, and one 0-d add replaces a foreach add over every parameter's counter (on a CPU a loop of small
        adds). None (no direct step) while the parameters' step counts differ (one had no gradient at some
        step)."""
        states = [self.optimizer.state[p] for p in self.params]
        step = states[0]["step"]
        if any(not torch.equal(s["step"], step) for s in states):
            return None
        for s in states:
            s["step"] = step
        return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [step] * len(states)

    def _unshare_steps(self) -> None:
        """Before `optimizer.step()`, which adds 1 to each parameter's step tensor: separate copies again."""
        if self._fused_state is not None:
            for p in self.params:
                self.optimizer.state[p]["step"] = self.optimizer.state[p]["step"].clone()
            self._fused_state = None

    def load_state_dict(self, state: dict) -> None:
        self._fused_state = None  # the loaded state tensors replace the cached ones
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])


def _direct_fused_applies(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> bool:
    """Whether `Updater._direct_fused_step` may replace `optimizer.step()`: one group of CPU parameters under
    the fused AdamW kernel (not on other devices, where CUDA graphs are the fast path; not with amsgrad or
    maximize; not on a torch without the kernel)."""
    group = optimizer.param_groups[0]
    return (len(optimizer.param_groups) == 1 and bool(group.get("fused")) and not group.get("amsgrad")
            and not group.get("maximize") and hasattr(torch, "_fused_adamw_")
            and all(p.device.type == "cpu" for p in params))


@torch.no_grad()
def polyak_update(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, for all tensors in one foreach kernel."""
    torch._foreach_lerp_(target, online, tau)
