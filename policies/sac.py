"""SAC in the RLPD / SERL recipe, readable top to bottom.

Recipe (reference: SERL `agents/continuous/sac.py`, RLPD, REDQ):
- actor and critics are MLPs with LayerNorm before a tanh activation (also after the last hidden layer);
- a critic ensemble of E members evaluated in one batched matmul per layer (weights stacked as
  (E, in, out)), each member with its own output head; the bootstrap target takes the min over a random
  subset of M members (REDQ; M = E gives the plain clipped double-Q min);
- no entropy term in the target by default (`backup_entropy=False`, as SERL);
- actor loss uses the ensemble *mean* Q; temperature starts at 1e-2 with target entropy -|A|/2;
- update-to-data ratio k: per environment step the critic takes k gradient steps on k fresh batches,
  the actor and the temperature one (RLPD's `update` with `utd_ratio`), all from one pre-sampled block;
- time-outs bootstrap: only `terminated` zeroes the next-state value.

Actions live in [-1, 1]^A (tanh-squashed Gaussian); the caller rescales to the env's bounds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies import fused_layers
from robot.core.checkpoint import optimizer_state_from_tensors, optimizer_state_to_tensors
from robot.core.compile import CompileMode, GraphedStep, compile_step
from robot.core.optim import OptimConfig, Updater, polyak_update


@dataclass
class SACConfig:
    """Hyperparameters of the SAC / RLPD learner."""

    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics (SERL: 256, 256)."""
    layer_norm: bool = True
    """LayerNorm after every hidden Linear of actor and critics (SERL/RLPD: on; SB3, CleanRL: off)."""
    activation: str = "tanh"
    """Hidden activation: 'tanh' (SERL) or 'relu' (SB3, CleanRL)."""
    num_critics: int = 10
    """Critic ensemble size E (SERL: 10, HIL-SERL: 2)."""
    num_subsample: int = 2
    """Members in the target min (REDQ M; set equal to num_critics for a min over all)."""
    discount: float = 0.99
    """Discount factor gamma (SERL: 0.99 state tasks, 0.96-0.98 pixel/real tasks)."""
    tau: float = 0.005
    """Polyak rate of the target critics per critic step."""
    init_temperature: float = 1e-2
    """Initial entropy temperature alpha (SERL/RLPD: 1e-2)."""
    target_entropy: float | None = None
    """Target policy entropy; None means -|A|/2 (SERL)."""
    backup_entropy: bool = False
    """Subtract alpha * log pi(a'|s') in the critic target (SERL: off)."""
    utd_ratio: int = 1
    """Critic gradient steps per environment step (actor and temperature take one)."""
    batch_size: int = 256
    """Rows per gradient step (with demos: half online, half demo)."""
    log_std_min: float = -5.0
    """Lower clamp of the policy log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the policy log standard deviation."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Adam settings shared by actor, critics and temperature."""
    compile: CompileMode = CompileMode.NONE
    """Opt-in compiled update step: 'compile' (torch.compile) or 'cuda-graph' (GPU only)."""
    backward: str = "auto"
    """How gradients are computed: 'explicit' (hand-derived backward passes, policies/sac_backprop.py: the
    same update without an autograd graph; benchmarks/learner_throughput.py has its speed), 'autograd', or
    'auto': explicit for state-observation agents on a CPU when `compile` is 'none', autograd otherwise (pixel
    agents, compiled steps, GPUs, where CUDA graphs are the fast path; explicit runs there, tested, but is not
    timed)."""
    fused_kernels: bool = True
    """With the explicit backward on a CPU: run each LayerNorm hidden layer's bias, LayerNorm, affine and
    activation, every hidden layer's backward, the critics' Q heads and the actor's squashed-Gaussian head as
    compiled kernels
    (policies/fused_layers.py), built on first use with the system C compiler; without one, or False, ATen
    ops do the same math."""

    def __post_init__(self) -> None:
        if not 1 <= self.num_subsample <= self.num_critics:
            raise ValueError(
                f"num_subsample: expected 1..num_critics ({self.num_critics}), got {self.num_subsample}"
            )
        if self.utd_ratio < 1:
            raise ValueError(f"utd_ratio: expected >= 1 critic step per env step, got {self.utd_ratio}")
        if self.backward not in BACKWARDS:
            raise ValueError(f"backward: expected one of {BACKWARDS}, got {self.backward!r}")
        if self.backward == "explicit" and self.compile is not CompileMode.NONE:
            raise ValueError(f"backward 'explicit' runs eagerly; compile {self.compile.value!r} needs backward "
                             "'autograd' (or 'auto')")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount: expected a value in (0, 1], got {self.discount}")
        if self.compile is CompileMode.CUDA_GRAPH and self.optim.warmup_steps > 0:
            raise ValueError("compile 'cuda-graph' replays tensor work only; a learning-rate warmup schedule "
                             f"(optim.warmup_steps={self.optim.warmup_steps}) would not advance: set it to 0")


BACKWARDS = ("auto", "autograd", "explicit")


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------
ACTIVATIONS = {"tanh": (nn.Tanh, torch.tanh), "relu": (nn.ReLU, torch.relu)}


def mlp(in_dim: int, hidden_dims: tuple[int, ...], layer_norm: bool = True, activation: str = "tanh") -> nn.Sequential:
    """Linear -> LayerNorm -> activation per hidden layer (the last one activated too, as SERL)."""
    layers: list[nn.Module] = []
    for width in hidden_dims:
        norm = [nn.LayerNorm(width)] if layer_norm else []
        layers += [nn.Linear(in_dim, width), *norm, ACTIVATIONS[activation][0]()]
        in_dim = width
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied in one batched matmul: (E, B, in) -> (E, B, out)."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default init, per member
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, detach: bool = False, members: torch.Tensor | None = None) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if members is not None:  # evaluate only these members (e.g. the REDQ target subset)
            w, b = w[members], b[members]
        if x.dim() == 2:  # the same (B, in) input for every member: broadcast, not copied
            x = x.expand(w.shape[0], *x.shape)
        return torch.baddbmm(b, x, w)  # (E, B, in) @ (E, in, out) + (E, 1, out)


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over features with a separate affine per member."""

    def __init__(self, num_members: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(num_members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, dim))
        # An identity affine for the normalisation itself: torch's CPU layer-norm kernel without weight and
        # bias is ~2x slower than with them (the per-member affine follows as one addcmul).
        self.register_buffer("unit_scale", torch.ones(dim), persistent=False)
        self.register_buffer("zero_shift", torch.zeros(dim), persistent=False)

    def forward(self, x: torch.Tensor, detach: bool = False, members: torch.Tensor | None = None) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if members is not None:
            w, b = w[members], b[members]
        return torch.addcmul(b, F.layer_norm(x, (self.dim,), self.unit_scale, self.zero_shift), w)


class CriticEnsemble(nn.Module):
    """E Q-functions Q_e(s, a), each with its own trunk and head; returns (E, B)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: tuple[int, ...], num_members: int,
                 layer_norm: bool = True, activation: str = "tanh") -> None:
        super().__init__()
        dims = (obs_dim + action_dim, *hidden_dims)
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.linears = nn.ModuleList(EnsembleLinear(num_members, a, b) for a, b in pairs)
        self.norms = nn.ModuleList(EnsembleLayerNorm(num_members, d) for d in hidden_dims) if layer_norm else None
        self.activation = ACTIVATIONS[activation][1]
        self.head = EnsembleLinear(num_members, dims[-1], 1)

    def forward(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        detach_params: bool = False,
        members: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Q-values (E, B), or (len(members), B) for a subset of members.

        `detach_params` lets gradients reach the action only (the actor loss), not critic weights, which
        skips the weight-gradient GEMMs.
        """
        x = torch.cat([obs, action], dim=-1)  # (B, obs+act)
        for i, linear in enumerate(self.linears):
            x = linear(x, detach_params, members)  # (E, B, h)
            if self.norms is not None:
                x = self.norms[i](x, detach_params, members)
            x = self.activation(x)
        return self.head(x, detach_params, members).squeeze(-1)  # (E, B)


class TanhGaussianActor(nn.Module):
    """pi(a|s) = tanh(N(mu(s), sigma(s))), with the change-of-variables log-probability."""

    def __init__(self, obs_dim: int, action_dim: int, config: SACConfig) -> None:
        super().__init__()
        self.trunk = mlp(obs_dim, config.hidden_dims, config.layer_norm, config.activation)
        self.head = nn.Linear(config.hidden_dims[-1], 2 * action_dim)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.head(self.trunk(obs)).chunk(2, dim=-1)
        return mean, log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action in (-1, 1) and its log-probability (B,)."""
        mean, log_std = self(obs)
        return squashed_gaussian(mean, log_std, torch.randn_like(mean))


def squashed_gaussian(
    mean: torch.Tensor, log_std: torch.Tensor, eps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """a = tanh(mean + exp(log_std) * eps) and log pi(a) (B,), for noise `eps` drawn from N(0, I)."""
    u = torch.addcmul(mean, log_std.exp(), eps)
    # log N(u) - sum log(1 - tanh(u)^2), the latter written stably as 2(log 2 - u - softplus(-2u)).
    log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), log_prob


# ---------------------------------------------------------------------------------------------
# Learner
# ---------------------------------------------------------------------------------------------
class SACAgent:
    """Actor, critic ensemble, target critics and temperature, with their updaters."""

    explicit_backward_ok = True
    """Whether `policies/sac_backprop.py` derives this agent's gradients (not for agents that train more
    than the actor and critic MLPs through the losses, such as an image encoder)."""

    def __init__(self, obs_dim: int, action_dim: int, config: SACConfig, device: torch.device) -> None:
        self.config, self.device = config, device
        self.actor = TanhGaussianActor(obs_dim, action_dim, config).to(device)
        self.critic = CriticEnsemble(obs_dim, action_dim, config.hidden_dims, config.num_critics, config.layer_norm,
                                     config.activation).to(device)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(math.log(config.init_temperature), device=device, requires_grad=True)
        self.target_entropy = (
            -action_dim / 2 if config.target_entropy is None else config.target_entropy
        )
        self.critic_params, self.target_params = self._critic_trainables()
        self.actor_updater = Updater(self.actor.parameters(), config.optim)
        self.critic_updater = Updater(self.critic_params, config.optim)
        self.temperature_updater = Updater([self.log_alpha], config.optim)
        self._critic_loss = compile_step(self.critic_loss, config.compile, device)
        self._actor_loss = compile_step(self.actor_loss, config.compile, device)
        self._graphed = GraphedStep(self.update_prepared) if config.compile is CompileMode.CUDA_GRAPH else None
        if config.backward == "explicit" and not self.explicit_backward_ok:
            raise ValueError(f"backward 'explicit' derives the state agent's gradients only; {type(self).__name__} "
                             "needs backward 'autograd' (or 'auto')")
        self.explicit_backward = self.explicit_backward_ok and (
            config.backward == "explicit"
            or (config.backward == "auto" and config.compile is CompileMode.NONE and device.type == "cpu")
        )
        self.fused_kernels = (self.explicit_backward and config.fused_kernels and device.type == "cpu"
                              and fused_layers.available())

    # -- hooks for agents that encode observations (policies/image_sac.py) -----------------------
    def _critic_trainables(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Weights the critic loss trains and their Polyak targets, in matching order."""
        return list(self.critic.parameters()), list(self.target_critic.parameters())

    def critic_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(critic input of obs, actor input of next_obs, target-critic input of next_obs)."""
        return batch["obs"], batch["next_obs"], batch["next_obs"]

    def actor_inputs(self, batch: dict) -> torch.Tensor:
        """Actor input of obs (an encoder's features enter detached: the actor never trains them)."""
        return batch["obs"]

    def prepare(self, block: dict) -> dict:
        """A sampled block as tensors on the learner's device."""
        return to_tensors(block, self.device)

    # -- acting --------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        action = torch.tanh(self.actor(obs_t)[0]) if deterministic else self.actor.sample(obs_t)[0]
        return action[0].cpu().numpy()

    # -- losses (pure functions of the batch: what `compile` captures) -------------------------
    def critic_loss(
        self, batch: dict[str, torch.Tensor], members: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`members`: the REDQ subset of target critics for this step (drawn by the caller, so that a
        compiled loss sees it as an input rather than tracing the draw); None takes the min over all."""
        cfg = self.config
        obs, next_obs_actor, next_obs_target = self.critic_inputs(batch)
        with torch.no_grad():
            next_action, next_log_prob = self.actor.sample(next_obs_actor)
            target = self.critic_target(batch, next_obs_target, next_action, next_log_prob, members)
        q = self.critic(obs, batch["action"])  # (E, B)
        # Mean over the batch, sum over members: each member regresses on the target at full scale.
        loss = (q - target).square().mean(dim=1).sum()
        return loss, {"train/critic_loss": loss.detach() / cfg.num_critics, "train/q_mean": q.detach().mean()}

    @torch.no_grad()
    def critic_target(self, batch: dict[str, torch.Tensor], next_obs: torch.Tensor, next_action: torch.Tensor,
                      next_log_prob: torch.Tensor, members: torch.Tensor | None) -> torch.Tensor:
        """r + gamma * (1 - terminated) * min over the target members of Q(s', a') (B,)."""
        # REDQ: min over a random subset of M target members; only those M are evaluated.
        return self.bootstrap(batch, self.target_critic(next_obs, next_action, members=members), next_log_prob)

    def bootstrap(self, batch: dict[str, torch.Tensor], next_q: torch.Tensor,
                  next_log_prob: torch.Tensor) -> torch.Tensor:
        """The critic target from the target members' Q(s', a') (M, B)."""
        next_v = next_q.amin(dim=0)  # (B,)
        if self.config.backup_entropy:
            next_v = next_v - self.log_alpha.exp() * next_log_prob
        discount, not_done = bootstrap_discount(batch, self.config.discount), 1.0 - batch["terminated"]
        if isinstance(discount, torch.Tensor):  # per row (n-step)
            not_done, discount = not_done * discount, 1.0
        return torch.addcmul(batch["reward"], not_done, next_v, value=discount)

    def actor_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the loss and log pi(a|s) of the sampled actions (the temperature step reuses them)."""
        obs = self.actor_inputs(batch)
        action, log_prob = self.actor.sample(obs)
        q = self.critic(obs, action, detach_params=True).mean(dim=0)  # (B,)
        return (self.log_alpha.exp().detach() * log_prob - q).mean(), log_prob.detach()

    # -- updates -------------------------------------------------------------------------------
    def draw_target_members(self) -> torch.Tensor | None:
        """The REDQ subset for one critic step, drawn on the device (argsort of uniforms, not randperm:
        capturable in a CUDA graph); None when it is every member (no draw, no weight gather)."""
        if self.config.num_subsample == self.config.num_critics:
            return None
        return torch.rand(self.config.num_critics, device=self.device).argsort()[: self.config.num_subsample]

    def update_critic(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss, metrics = self._critic_loss(batch, self.draw_target_members())
        self.critic_updater.update(loss)
        polyak_update(self.target_params, self.critic_params, self.config.tau)
        return metrics

    def update_actor(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        loss, log_prob = self._actor_loss(batch)
        self.actor_updater.update(loss)
        return {"train/actor_loss": loss.detach(), "train/entropy": -log_prob.mean()}, log_prob

    def update_temperature(self, log_prob: torch.Tensor) -> dict[str, torch.Tensor]:
        loss = -(self.log_alpha.exp() * (log_prob + self.target_entropy)).mean()
        self.temperature_updater.update(loss)
        return {"train/temperature": self.log_alpha.detach().exp(), "train/temperature_loss": loss.detach()}

    def update(self, block: dict[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """One environment step's worth of learning: `utd_ratio` critic steps, one actor/temperature step.

        `block` holds utd_ratio * batch_size rows (see `MixedSampler.sample(batch, num_batches=utd)`);
        critic step k uses rows [k*B, (k+1)*B), the actor and temperature the last B rows.
        """
        b, utd = self.config.batch_size, self.config.utd_ratio
        if len(block["action"]) != b * utd:
            raise ValueError(f"update: expected utd_ratio*batch_size = {b * utd} rows, got {len(block['action'])}")
        block = self.prepare(block)
        return self._graphed(block) if self._graphed is not None else self.update_prepared(block)

    def update_prepared(self, block: dict) -> dict[str, torch.Tensor]:
        """`update` on a block already on the device: pure tensor work, what a CUDA graph records."""
        if self.explicit_backward:
            from policies.sac_backprop import explicit_update  # imports this module: import on first use

            return explicit_update(self, block)
        b, utd = self.config.batch_size, self.config.utd_ratio
        for k in range(utd):
            metrics = self.update_critic(take_rows(block, slice(k * b, (k + 1) * b)))
        actor_metrics, log_prob = self.update_actor(take_rows(block, slice(-b, None)))
        return {**metrics, **actor_metrics, **self.update_temperature(log_prob)}

    # -- checkpoints ---------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        """All weights and optimizer state as a flat tensor dict + JSON layout of optimizer states."""
        tensors = {f"{prefix}.{k}": v for prefix, m in self._modules().items() for k, v in m.state_dict().items()}
        tensors["log_alpha"] = self.log_alpha.detach()
        layout = {}
        for name, updater in self._updaters().items():
            opt_tensors, layout[name] = optimizer_state_to_tensors(updater.state_dict(), prefix=f"optim.{name}")
            tensors |= opt_tensors
        return tensors, layout

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], layout: dict) -> None:
        for prefix, module in self._modules().items():
            module.load_state_dict({k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"])
        for name, updater in self._updaters().items():
            updater.load_state_dict(optimizer_state_from_tensors(tensors, layout[name]))
        if self._graphed is not None:  # the optimizer state tensors are new objects: record a new graph
            self._graphed = GraphedStep(self.update_prepared)

    def _modules(self) -> dict[str, nn.Module]:
        """Checkpointed modules by key prefix."""
        return {"actor": self.actor, "critic": self.critic, "target_critic": self.target_critic}

    def _updaters(self) -> dict[str, Updater]:
        return {"actor": self.actor_updater, "critic": self.critic_updater, "temperature": self.temperature_updater}


def to_tensors(batch: dict[str, np.ndarray | torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in batch.items()}


def take_rows(batch: dict, rows: slice) -> dict:
    """The same rows of every array of a (possibly nested: observation dicts) batch."""
    return {k: take_rows(v, rows) if isinstance(v, dict) else v[rows] for k, v in batch.items()}


def bootstrap_discount(batch: dict[str, torch.Tensor], discount: float) -> torch.Tensor | float:
    """gamma, or gamma ** horizon per row when the batch comes from an n-step buffer (`horizon` = steps
    between obs and next_obs, shorter where an episode ended)."""
    return discount ** batch["horizon"] if "horizon" in batch else discount
