"""SAC's gradient steps with hand-derived backward passes: the same update, a fraction of the op count.

Why: a SAC update on 256-wide MLPs at batch 256 is small. On a 2-core CPU its matrix products take ~2 ms;
autograd around them (graph nodes, saved-tensor bookkeeping, gradient accumulation) and the optimizer's
Python cost about as much again. Here every forward that needs a gradient keeps exactly the tensors its
backward reads, and the backward is written out layer by layer with fused ATen kernels
(`native_layer_norm_backward`, `tanh_backward`, `threshold_backward`). It also skips work autograd cannot
know to skip: the actor loss takes no critic weight gradients, and the actor's forward on next_obs (for the
critic target) and on obs (for the actor loss) is one batched forward of 2B rows. With `fused=True` (the
default on a CPU, `SACConfig.fused_kernels`) each critic hidden layer's epilogue (bias, LayerNorm, activation;
the last one's also the Q head), the actor's LayerNorm layers' epilogues, every hidden layer's backward and the
actor's squashed-Gaussian head run as compiled kernels (policies/fused_layers.py).
benchmarks/learner_throughput.py --phases has the per-update times of each variant against autograd.

What stays shared with the autograd path (policies/sac.py): the modules and their parameters, the
target formula (`SACAgent.bootstrap`), the optimizers (`Updater.step` clips and applies the gradients
written here) and Polyak averaging; the no-grad forwards (target critics, actions for the target) run
through `critic_forward` / `actor_forward` here so they can use the kernels. So checkpoints are the same,
and tests/policies/test_sac_backprop.py checks that one update here moves every parameter where the
autograd update moves it, for LayerNorm/tanh and ReLU networks, ensembles with and without REDQ subsets,
UTD > 1 and gradient clipping, with and without the kernels.

The math, per hidden layer z = x W + b, n = LayerNorm(z), y = n * g + beta, h = act(y):
    dy = act'(h) * dh;  dg = sum_B dy * n;  dbeta = sum_B dy;  dz = LN_backward(dy * g)
    dW = x^T dz;  db = sum_B dz;  dx = dz W^T
and for the tanh-squashed Gaussian a = tanh(u), u = mu + sigma * eps, log pi = sum(-eps^2/2 - log sigma
- log(2 pi)/2) - sum log(1 - a^2):
    dlog pi / du = 2a;  da/du = 1 - a^2;  du/dlog sigma = sigma * eps;  dlog pi/dlog sigma |_u = -1
(eps is the drawn noise, held fixed: the reparameterisation), and the clamp of log sigma passes the
gradient only inside its bounds, as autograd's clamp does.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import nn

from policies import fused_layers
from policies.sac import ACTIVATIONS, CriticEnsemble, SACAgent, TanhGaussianActor, squashed_gaussian, take_rows
from robot.core.optim import polyak_update

ACTIVATION_BACKWARD = {
    "tanh": torch.ops.aten.tanh_backward,  # (grad, output) -> grad * (1 - output^2)
    "relu": lambda grad, out: torch.ops.aten.threshold_backward(grad, out, 0.0),  # grad where output > 0
}
IN_PLACE = {"tanh": torch.tanh_, "relu": torch.relu_}  # on a fresh GEMM output nothing else reads
LAYER_NORM_EPS = 1e-5  # F.layer_norm's default, which EnsembleLayerNorm uses


@dataclass(slots=True)
class Layer:
    """What one hidden layer's backward reads: its input, pre-norm output and norm statistics, output."""

    x: torch.Tensor
    z: torch.Tensor | None  # None without LayerNorm
    mean: torch.Tensor | None
    rstd: torch.Tensor | None
    normed: torch.Tensor | None  # LayerNorm output before the per-member affine (critic only)
    h: torch.Tensor

    def rows(self, rows: slice) -> Layer:
        """The same layer for a slice of the batch (rows are independent through every op here)."""
        pick = lambda t: None if t is None else t[..., rows, :]  # noqa: E731
        return Layer(pick(self.x), pick(self.z), pick(self.mean), pick(self.rstd), pick(self.normed), pick(self.h))


def _activation_of(module: nn.Module) -> str:
    for name, (cls, fn) in ACTIVATIONS.items():
        if isinstance(module, cls) or module is fn:
            return name
    raise TypeError(f"explicit backward: no derivative for activation {module!r}; "
                    f"expected one of {sorted(ACTIVATIONS)}")


# ---------------------------------------------------------------------------------------------
# Critic ensemble: (E, B, .) activations, weights (E, in, out)
# ---------------------------------------------------------------------------------------------
_STRUCTURE: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()
"""Per network, its layer modules in order, found once: a network's modules never change after it is built
(moving it to a device or loading weights replaces tensors inside the same modules), and walking
ModuleLists and Sequentials every update costs more Python than some of the kernels it feeds."""


def _critic_layers(critic: CriticEnsemble) -> tuple[list[tuple[nn.Module, nn.Module | None]], str]:
    """(EnsembleLinear, EnsembleLayerNorm or None) per hidden layer, and the activation's name."""
    if (found := _STRUCTURE.get(critic)) is None:
        linears = list(critic.linears)
        norms = [None] * len(linears) if critic.norms is None else list(critic.norms)
        found = _STRUCTURE[critic] = (list(zip(linears, norms, strict=True)), _activation_of(critic.activation))
    return found


def _ensemble_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x W per member, no bias: (B, in) shared by all members (broadcast, not copied) or (E, B, in)."""
    if x.dim() == 2:
        x = x.expand(weight.shape[0], *x.shape)
    return torch.bmm(x, weight)


def critic_forward(
    critic: CriticEnsemble, obs: torch.Tensor, action: torch.Tensor, fused: bool = False,
    members: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[Layer]]:
    """Q-values (E, B) and the tape its backward reads (call under no_grad or inference_mode). `fused`: the
    hidden layers run as policies/fused_layers.py kernels; `members`: evaluate only these members (the REDQ
    target subset)."""
    x = torch.cat([obs, action], dim=-1)
    pick = (lambda p: p) if members is None else (lambda p: p[members])  # noqa: E731
    layers, activation = _critic_layers(critic)
    tape, q = [], None
    for i, (linear, norm) in enumerate(layers):
        # fused: the last hidden layer's kernel also applies the Q head
        head = (pick(critic.head.weight), pick(critic.head.bias)) if fused and i == len(layers) - 1 else None
        if norm is None and fused:  # act(x W + b) in place
            h, q = fused_layers.act_forward(_ensemble_matmul(x, pick(linear.weight)), pick(linear.bias), activation,
                                            head)
            tape.append(Layer(x, None, None, None, None, h))
        elif norm is None:  # the GEMM adds the bias, the activation runs in place
            tape.append(Layer(x, None, None, None, None, h := IN_PLACE[activation](linear(x, members=members))))
        elif fused:
            z = _ensemble_matmul(x, pick(linear.weight))
            h, mean, rstd, q = fused_layers.ln_act_forward(z, pick(linear.bias), pick(norm.weight),
                                                           pick(norm.bias), activation, LAYER_NORM_EPS, head)
            tape.append(Layer(x, z, mean, rstd, None, h))  # z now holds x W + b
        else:
            z = linear(x, members=members)  # (E, B, h)
            normed, mean, rstd = torch.native_layer_norm(z, (norm.dim,), norm.unit_scale, norm.zero_shift,
                                                          LAYER_NORM_EPS)
            h = critic.activation(torch.addcmul(pick(norm.bias), normed, pick(norm.weight)))
            tape.append(Layer(x, z, mean, rstd, normed, h))
        x = h
    return (critic.head(x, members=members).squeeze(-1) if q is None else q), tape


def critic_backward(
    critic: CriticEnsemble, tape: list[Layer], dq: torch.Tensor, weights: bool, input_cols: slice | None = None,
    fused: bool = False
) -> torch.Tensor | None:
    """Backpropagate dL/dQ (E, B) through the ensemble.

    `weights`: write dL/dparameter into each parameter's `.grad` (the critic loss); without it only the
    input gradient flows (the actor loss, which must not train the critics). `input_cols`: return
    dL/d(input columns), summed over members (the actor loss wants d/d action); None returns nothing.
    `fused`: the tape came from `critic_forward(..., fused=True)`.
    """
    layers, activation = _critic_layers(critic)
    head = critic.head
    if weights:
        if not fused:  # else the last hidden layer's kernel sums dq * h
            head.weight.grad = torch.bmm(tape[-1].h.transpose(1, 2), dq.unsqueeze(-1))
        head.bias.grad = dq.sum(1, keepdim=True).unsqueeze(-1)
    # The head has one output: dL/dh of the last hidden layer is dq (E, B) times the head's weights (E, 1, h).
    # The fused kernels take that product row by row; ATen materialises it.
    dh, row_scale = head.weight.transpose(1, 2), dq
    if not fused:
        dh, row_scale = dq.unsqueeze(-1) * dh, None
    for i in reversed(range(len(tape))):
        layer, (linear, norm) = tape[i], layers[i]
        head_grad = fused and weights and i == len(tape) - 1  # the kernel also sums dq * h (the head's weights)
        if fused and norm is not None:
            dz, dgamma, dbeta, dbias, dhead = fused_layers.ln_act_backward(
                dh, layer.h, layer.z, layer.mean, layer.rstd, norm.weight, activation, weights, row_scale, head_grad)
            if weights:
                norm.weight.grad, norm.bias.grad, linear.bias.grad = dgamma, dbeta, dbias
        elif fused:
            dz, dbias, dhead = fused_layers.act_backward(dh, layer.h, activation, linear.bias if weights else None,
                                                         row_scale, head_grad)
            if weights:
                linear.bias.grad = dbias
        else:
            dz = ACTIVATION_BACKWARD[activation](dh, layer.h)
            if norm is not None:
                if weights:
                    norm.weight.grad = (dz * layer.normed).sum(1, keepdim=True)
                    norm.bias.grad = dz.sum(1, keepdim=True)
                dz = torch.ops.aten.native_layer_norm_backward(
                    dz * norm.weight, layer.z, (norm.dim,), layer.mean, layer.rstd, None, None, (True, False, False)
                )[0]
            if weights:
                linear.bias.grad = dz.sum(1, keepdim=True)
        if head_grad:
            head.weight.grad = dhead
        if weights:
            # the first layer's input is shared by all members: (in, B) @ (E, B, h) broadcasts to (E, in, h)
            linear.weight.grad = torch.matmul(layer.x.transpose(-1, -2), dz)
        if i > 0:
            dh, row_scale = torch.bmm(dz, linear.weight.transpose(1, 2)), None
        elif input_cols is not None:
            return torch.bmm(dz, linear.weight[:, input_cols].transpose(1, 2)).sum(0)
    return None


# ---------------------------------------------------------------------------------------------
# Actor: nn.Sequential trunk of Linear [-> LayerNorm] -> activation, then a Linear head to (mu, log sigma)
# ---------------------------------------------------------------------------------------------
@dataclass
class ActorTape:
    layers: list[Layer]
    head_out: torch.Tensor  # (B, 2A): mu, then log sigma before the clamp
    eps: torch.Tensor
    action: torch.Tensor

    def rows(self, rows: slice) -> ActorTape:
        return ActorTape([layer.rows(rows) for layer in self.layers], self.head_out[rows], self.eps[rows],
                         self.action[rows])


def _trunk_layers(actor: TanhGaussianActor) -> list[tuple[nn.Linear, nn.LayerNorm | None, str]]:
    """(Linear, LayerNorm or None, activation name) per hidden layer of the actor's trunk."""
    if (layers := _STRUCTURE.get(actor)) is None:
        modules, layers = list(actor.trunk), []
        while modules:
            linear = modules.pop(0)
            norm = modules.pop(0) if isinstance(modules[0], nn.LayerNorm) else None
            layers.append((linear, norm, _activation_of(modules.pop(0))))
        _STRUCTURE[actor] = layers
    return layers


def actor_forward(
    actor: TanhGaussianActor, obs: torch.Tensor, eps: torch.Tensor | None = None, fused: bool = False
) -> tuple[torch.Tensor, torch.Tensor, ActorTape]:
    """Sampled action (B, A), log pi (B,) and the tape; the noise `eps` (B, A) is drawn as
    `TanhGaussianActor.sample` draws it unless given. `fused`: hidden layers as fused_layers kernels."""
    x, layers = obs, []
    for linear, norm, act in _trunk_layers(actor):
        if norm is None:  # the GEMM adds the bias, the activation runs in place
            layers.append(Layer(x, None, None, None, None,
                                h := IN_PLACE[act](torch.addmm(linear.bias, x, linear.weight.t()))))
        elif fused:
            z = torch.mm(x, linear.weight.t())
            h, mean, rstd, _ = fused_layers.ln_act_forward(z, linear.bias, norm.weight, norm.bias, act, norm.eps)
            layers.append(Layer(x, z, mean, rstd, None, h))
        else:
            z = torch.addmm(linear.bias, x, linear.weight.t())
            y, mean, rstd = torch.native_layer_norm(z, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
            layers.append(Layer(x, z, mean, rstd, None, h := ACTIVATIONS[act][1](y)))
        x = h
    head_out = torch.addmm(actor.head.bias, x, actor.head.weight.t())
    mean, log_std = head_out.chunk(2, dim=-1)
    eps = torch.randn_like(mean) if eps is None else eps
    if fused:
        action, log_prob = fused_layers.tanh_gaussian_forward(head_out, eps, actor.log_std_min, actor.log_std_max)
    else:
        action, log_prob = squashed_gaussian(mean, log_std.clamp(actor.log_std_min, actor.log_std_max), eps)
    return action, log_prob, ActorTape(layers, head_out, eps, action)


def actor_backward(actor: TanhGaussianActor, tape: ActorTape, d_action: torch.Tensor, d_log_prob: torch.Tensor,
                   fused: bool = False) -> None:
    """Write dL/dparameter into the actor's `.grad`s for a loss L with dL/da = `d_action` (B, A) and
    dL/dlog pi = `d_log_prob` (a 0-d tensor, the same for every row: alpha / B in SAC's actor loss)."""
    a, eps, lo, hi = tape.action, tape.eps, actor.log_std_min, actor.log_std_max
    if fused:
        d_out, actor.head.bias.grad = fused_layers.tanh_gaussian_backward(tape.head_out, eps, a, d_action,
                                                                          float(d_log_prob), lo, hi)
    else:
        log_std = tape.head_out[:, a.shape[-1]:]
        std = log_std.clamp(lo, hi).exp()  # recomputed: (B, A), cheap
        du = torch.addcmul(d_action * (1.0 - a.square()), a, 2.0 * d_log_prob)
        inside = (log_std >= lo) & (log_std <= hi)
        d_log_std = (du * std * eps - d_log_prob) * inside
        d_out = torch.cat([du, d_log_std], dim=-1)  # (B, 2A) in the head's (mu, log sigma) order
        actor.head.bias.grad = d_out.sum(0)
    actor.head.weight.grad = d_out.t() @ tape.layers[-1].h
    dh = d_out @ actor.head.weight
    layers = _trunk_layers(actor)
    for i in reversed(range(len(layers))):
        (linear, norm, act), layer = layers[i], tape.layers[i]
        if fused and norm is not None:
            dz, norm.weight.grad, norm.bias.grad, linear.bias.grad, _ = fused_layers.ln_act_backward(
                dh, layer.h, layer.z, layer.mean, layer.rstd, norm.weight, act, grads=True)
        elif fused:
            dz, linear.bias.grad, _ = fused_layers.act_backward(dh, layer.h, act, linear.bias)
        else:
            dz = ACTIVATION_BACKWARD[act](dh, layer.h)
            if norm is not None:
                dz, norm.weight.grad, norm.bias.grad = torch.ops.aten.native_layer_norm_backward(
                    dz, layer.z, norm.normalized_shape, layer.mean, layer.rstd, norm.weight, norm.bias,
                    (True, True, True)
                )
            linear.bias.grad = dz.sum(0)
        linear.weight.grad = dz.t() @ layer.x
        if i > 0:
            dh = dz @ linear.weight


# ---------------------------------------------------------------------------------------------
# The update: SACAgent.update_prepared, step for step, with the backward passes above
# ---------------------------------------------------------------------------------------------
@torch.inference_mode()
def explicit_update(agent: SACAgent, block: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`utd_ratio` critic steps, then one actor and one temperature step, as `SACAgent.update_prepared`.

    The random draws come in the autograd path's order (REDQ subset, then noise for next_obs, then noise
    for obs), so on a CPU both paths sample the same numbers from the same seed.

    Inference mode rather than no_grad: nothing here is recorded for autograd, and skipping the version
    counters and view tracking of every op is a measurable share of a small update on a CPU (BENCHMARKS.md,
    learner_throughput, session 6). Tensors made here (metrics,
    the optimizer state the first step creates) are inference tensors: read freely, but changed in place only
    here (an agent's gradient path is fixed when it is built; a checkpoint load makes ordinary ones again).
    """
    cfg, critic, actor = agent.config, agent.critic, agent.actor
    b, utd, fused = cfg.batch_size, cfg.utd_ratio, agent.fused_kernels
    actor_batch = block if utd == 1 else take_rows(block, slice(-b, None))
    for k in range(utd):
        batch = block if utd == 1 else take_rows(block, slice(k * b, (k + 1) * b))
        members = agent.draw_target_members()
        if k == utd - 1:
            # The actor does not change during critic steps: one forward of next_obs and obs rows serves
            # this step's target and the actor step below.
            both_obs = torch.cat([batch["next_obs"], actor_batch["obs"]])
            # noise drawn in two blocks, as the autograd path's two `sample` calls draw it
            eps = torch.cat([torch.randn_like(batch["action"]) for _ in range(2)])
            actions, log_probs, actor_tape = actor_forward(actor, both_obs, eps, fused)
            next_action, next_log_prob = actions[:b], log_probs[:b]
        else:
            next_action, next_log_prob, _ = actor_forward(actor, batch["next_obs"], fused=fused)
        next_q, _ = critic_forward(agent.target_critic, batch["next_obs"], next_action, fused, members)
        target = agent.bootstrap(batch, next_q, next_log_prob)
        q, tape = critic_forward(critic, batch["obs"], batch["action"], fused)
        error = q - target
        critic_backward(critic, tape, error * (2.0 / b), weights=True, fused=fused)  # d/dq of sum_E mean_B error^2
        agent.critic_updater.step()
        polyak_update(agent.target_params, agent.critic_params, cfg.tau)
    critic_loss = error.square().mean()  # sum over members of the mean over rows, / E: the logged figure

    # Actor: L = mean_B(alpha * log pi(a|s) - mean_E Q_e(s, a)), critics held fixed.
    alpha = agent.log_alpha.exp()
    action, log_prob, actor_tape = actions[b:], log_probs[b:], actor_tape.rows(slice(b, None))
    q_pi, q_tape = critic_forward(critic, actor_batch["obs"], action, fused)
    log_prob_mean = log_prob.mean()
    actor_loss = alpha * log_prob_mean - q_pi.mean()  # = mean_B(alpha log pi - mean_E Q), for the log
    d_action = critic_backward(critic, q_tape, torch.full_like(q_pi, -1.0 / q_pi.numel()), weights=False,
                               input_cols=slice(-action.shape[-1], None), fused=fused)
    actor_backward(actor, actor_tape, d_action, alpha / b, fused)
    agent.actor_updater.step()

    # Temperature: L = -mean_B(alpha * (log pi + target entropy)), d/dlog alpha = L.
    temperature_loss = -alpha * (log_prob_mean + agent.target_entropy)
    agent.log_alpha.grad = temperature_loss.clone()
    agent.temperature_updater.step()
    return {"train/critic_loss": critic_loss, "train/q_mean": q.mean(),
            "train/actor_loss": actor_loss, "train/entropy": -log_prob_mean,
            "train/temperature": agent.log_alpha.exp(), "train/temperature_loss": temperature_loss}
