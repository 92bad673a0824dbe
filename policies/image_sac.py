"""SAC / RLPD from pixels (SERL's DrQ agent, HIL-SERL's pixel agent): `SACAgent` plus an image encoder.

Everything SAC is inherited from `policies.sac.SACAgent` (critic ensemble with a separate head per
member, REDQ subset target, actor, temperature, the UTD loop, checkpoints); this module adds only
what pixels change, through the hooks `critic_inputs`, `actor_inputs`, `prepare`:
- one `ImageEncoder` shared by critic and actor; the critic loss trains it (its weights sit in the
  critic's updater), the actor sees its features through a stop-gradient (SERL, reference 1.2);
- a target encoder, Polyak-averaged with the target critics (a frozen backbone is shared, not copied:
  its feature maps of next_obs are computed once and feed both the online and the target heads);
- DrQ augmentation: each image of obs and next_obs shifted independently by up to `augment_pad`
  pixels on the learner's device, from a seeded generator that checkpoints with the agent;
- optionally HIL-SERL's grasp critic: the actor outputs the arm action, a double-DQN head picks the
  gripper command (the last action component).

UTD is defined per environment step exactly as in `SACAgent.update`: `utd_ratio` critic steps and one
actor/temperature step per env step, in the caller's loop, so a synchronous run is reproducible
(reference 1.2: SERL's free-running learner makes it depend on learner speed).

Ensemble presets: HIL-SERL uses `num_critics=2, num_subsample=2`; SERL `num_critics=10,
num_subsample=2` (both via `SACConfig`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from policies.augmentation import augment_observations
from policies.encoders import EncoderConfig, ImageEncoder, ObsSpec
from policies.grasp_critic import (
    GraspCritic,
    GraspCriticConfig,
    double_dqn_target,
    grasp_command,
    grasp_index,
    grasp_loss,
)
from policies.sac import SACAgent, SACConfig, bootstrap_discount


@dataclass
class ImageAgentConfig:
    """What a pixel agent adds to SAC (used when the env gives image observations)."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    """Image encoder shared by critic and actor."""
    augment_pad: int = 4
    """DrQ random shift in pixels (SERL: 4); 0 disables."""
    grasp: GraspCriticConfig = field(default_factory=GraspCriticConfig)
    """HIL-SERL grasp critic for the gripper (last action component)."""
    max_replay_frames: int = 50_000
    """Upper bound on the online and demo frame buffers (observation slots); caps replay_capacity and
    demo_capacity, which are sized for state vectors. 50k slots x 2 cameras 128x128 = 4.9 GB (SERL: 200k)."""
    replay_on_device: bool = False
    """Keep the frame buffers on the learner's device (a GPU): a batch is gathered there, so no images
    cross the host->device link per update (at UTD 4, batch 256, 2 cameras 128x128 that is 200 MB per env
    step otherwise). Needs max_replay_frames x frame bytes of device memory per buffer."""

    def __post_init__(self) -> None:
        if self.augment_pad < 0:
            raise ValueError(f"augment_pad: expected >= 0 pixels, got {self.augment_pad}")
        if self.max_replay_frames < 2:
            raise ValueError(f"max_replay_frames: expected at least 2 slots, got {self.max_replay_frames}")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Dropout off for no-grad passes (targets, acting); restores the previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def obs_spec_of(space) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The encoder's observation spec from a gymnasium Dict space."""
    return {name: (tuple(sub.shape), np.dtype(sub.dtype)) for name, sub in space.spaces.items()}


class ImageSACAgent(SACAgent):
    """SAC on observation dicts of uint8 camera images and proprio vectors."""

    explicit_backward_ok = False  # the critic loss also trains the encoder (and the grasp critic): autograd

    def __init__(
        self,
        obs_spec: ObsSpec,
        action_dim: int,
        config: SACConfig,
        image_config: ImageAgentConfig,
        device: torch.device,
        seed: int = 0,
    ) -> None:
        self.image_config = image_config
        self.encoder = ImageEncoder(obs_spec, image_config.encoder).to(device)
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        if self.encoder.frozen:  # identical constant weights: share the module, compute its features once
            self.target_encoder.backbones = self.encoder.backbones
        self.cameras = tuple(self.encoder.cameras)
        self.action_dim = action_dim
        self.use_grasp = image_config.grasp.enabled
        if self.use_grasp and action_dim < 2:
            raise ValueError(f"grasp critic: the action needs arm components before the gripper, got {action_dim}")
        features = self.encoder.output_dim
        if self.use_grasp:
            self.grasp_critic = GraspCritic(features, image_config.grasp.hidden_dims).to(device)
            self.target_grasp_critic = copy.deepcopy(self.grasp_critic).requires_grad_(False)
        super().__init__(features, action_dim - self.use_grasp, config, device)
        if self.use_grasp and config.target_entropy is None:
            self.target_entropy = -action_dim / 2  # HIL-SERL keeps -|A|/2 of the full action
        self.augment_rng = torch.Generator(device=device)
        self.augment_rng.manual_seed(seed)
        self._grasp_features: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._actor_cache: tuple[tuple, dict, torch.Tensor] | None = None

    # -- hooks of SACAgent -------------------------------------------------------------------------
    def _critic_trainables(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        online, target = super()._critic_trainables()
        pairs = [(self.encoder, self.target_encoder)]
        if self.use_grasp:
            pairs.append((self.grasp_critic, self.target_grasp_critic))
        for net, target_net in pairs:
            named_target = dict(target_net.named_parameters(remove_duplicate=False))
            for name, p in net.named_parameters():
                if p.requires_grad:  # a frozen backbone is neither trained nor averaged
                    online.append(p)
                    target.append(named_target[name])
        return online, target

    def prepare(self, block: Mapping) -> dict:
        """To the device (images stay uint8), then DrQ shifts; splits off the gripper index."""
        out = {}
        for key, value in block.items():
            if key in ("obs", "next_obs"):
                obs = {k: self._obs_tensor(k, v) for k, v in value.items()}
                out[key] = augment_observations(obs, self.cameras, self.image_config.augment_pad, self.augment_rng)
            else:
                out[key] = torch.as_tensor(value, dtype=torch.float32, device=self.device)
        if self.use_grasp:
            out["grasp_index"] = grasp_index(out["action"][:, -1])
            out["action"] = out["action"][:, :-1]
        return out

    def critic_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        obs, next_obs = batch["obs"], batch["next_obs"]
        with torch.no_grad(), eval_mode(self.encoder):
            next_fmaps = self.encoder.features(next_obs)
            next_online = self.encoder.embed(next_fmaps, next_obs)
            target_fmaps = next_fmaps if self.encoder.frozen else self.target_encoder.features(next_obs)
            next_target = self.target_encoder.embed(target_fmaps, next_obs)
        self.encoder.train()
        features = self.encoder(obs)  # the only pass with a graph: the critic loss trains the encoder
        # The actor step of `update` reads the same rows: reuse these features (pre-update weights, as
        # SERL computes all losses of one update from the same parameters).
        self._actor_cache = (_rows_key(obs), dict(obs), features.detach())
        self._grasp_features = (features.detach(), next_online, next_target)
        return features, next_online, next_target

    def actor_inputs(self, batch: dict) -> torch.Tensor:
        obs, cache, self._actor_cache = batch["obs"], self._actor_cache, None
        if cache is not None and cache[0] == _rows_key(obs):
            return cache[2]
        with torch.no_grad():  # stop-gradient: the actor never trains the encoder
            return self.encoder(obs)

    def critic_loss(self, batch: dict, members: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = super().critic_loss(batch, members)
        if not self.use_grasp:
            return loss, metrics
        features, next_online, next_target = self._grasp_features
        with torch.no_grad():
            target = double_dqn_target(
                batch["reward"], batch["terminated"], bootstrap_discount(batch, self.config.discount),
                self.grasp_critic(next_online), self.target_grasp_critic(next_target),
            )
        g_loss = grasp_loss(self.grasp_critic(features), batch["grasp_index"], target)
        # Summed with the critic loss: disjoint weights, so each gets exactly its own gradient.
        return loss + g_loss, {**metrics, "train/grasp_critic_loss": g_loss.detach()}

    # -- acting ------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Mapping[str, np.ndarray], deterministic: bool = False) -> np.ndarray:
        if not isinstance(obs, Mapping):
            raise TypeError(f"image agent: expected an observation dict, got {type(obs).__name__}")
        batch = {k: np.asarray(v)[None] for k, v in obs.items()}  # (1, ...)
        with eval_mode(self.encoder):
            features = self.encoder(batch)
        action = torch.tanh(self.actor(features)[0]) if deterministic else self.actor.sample(features)[0]
        if self.use_grasp:
            index = self.grasp_critic(features).argmax(dim=-1)
            eps = self.image_config.grasp.epsilon
            if not deterministic and eps > 0 and torch.rand(()) < eps:
                index = torch.randint(0, 3, (1,), device=self.device)
            action = torch.cat([action, grasp_command(index).unsqueeze(-1)], dim=-1)
        return action[0].cpu().numpy()

    # -- checkpoints -------------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        modules = {**super()._modules(), "encoder": self.encoder, "target_encoder": self.target_encoder}
        if self.use_grasp:
            modules |= {"grasp_critic": self.grasp_critic, "target_grasp_critic": self.target_grasp_critic}
        return modules

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, layout = super().state_tensors()
        tensors["augment_rng"] = self.augment_rng.get_state()
        return tensors, layout

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], layout: dict) -> None:
        super().load_state_tensors(tensors, layout)
        self.augment_rng.set_state(tensors["augment_rng"].cpu())
        self._actor_cache = None

    def _obs_tensor(self, name: str, value) -> torch.Tensor:
        x = torch.as_tensor(value, device=self.device)
        return x if name in self.cameras else x.float()


def _rows_key(obs: Mapping[str, torch.Tensor]) -> tuple:
    """Identity of a batch's rows: the same memory and shape means the same rows (the cache holds the
    tensors, so their memory cannot be reused by another batch meanwhile)."""
    return tuple((k, v.data_ptr(), tuple(v.shape)) for k, v in sorted(obs.items()))
