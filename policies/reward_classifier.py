"""Learned success detector from camera frames, and the wrapper that turns it into reward and termination.

Reference (SERL `networks/reward_classifier.py`, HIL-SERL `train_reward_classifier.py`, LeRobot
`rewards/classifier`): image encoder (SERL: frozen ResNet-10 + spatial embeddings) -> Linear 256 ->
Dropout 0.1 -> LayerNorm -> ReLU -> Linear 1; binary cross-entropy, Adam 1e-4, batches balanced
between positives and negatives, random-crop augmentation; the env wrapper gives reward 1 and ends
the episode when sigmoid(logit) >= threshold (SERL 0.5; HIL-SERL 0.7-0.85 plus task checks).

Labels come from an episode store: the last `success_frames` observations of each successful episode
are positives (the state the person or script judged a success); negatives are every observation of
failed episodes plus the observations of successful episodes before the last 2 x `success_frames`
(the frames just before success look like it and are left out rather than labelled either way).
Precision and recall are measured on held-out *episodes* (split per class), never on frames of
episodes seen in training, whose neighbouring frames are near-duplicates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policies.augmentation import augment_observations
from policies.encoders import EncoderConfig, ImageEncoder
from robot.core.optim import OptimConfig, Updater

CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE = "config.json", "model.safetensors", "metrics.json"


@dataclass
class RewardClassifierConfig:
    """Reward classifier model and training."""

    cameras: tuple[str, ...] = ()
    """Camera observations the classifier sees; empty: every uint8 (H, W, 3) observation of the store."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(proprio_dim=0))
    """Image encoder (SERL: frozen pretrained ResNet-10; 'small' trains from scratch)."""
    hidden_dim: int = 256
    """Width of the classifier head."""
    dropout: float = 0.1
    """Dropout in the classifier head."""
    success_frames: int = 5
    """Positives: this many last observations of each successful episode."""
    steps: int = 2_000
    """Gradient steps."""
    batch_size: int = 256
    """Frames per step, half positive and half negative."""
    lr: float = 1e-4
    """Adam learning rate (SERL: 1e-4)."""
    augment_pad: int = 4
    """Random-shift augmentation in pixels; 0 disables."""
    val_fraction: float = 0.2
    """Share of successful and of failed episodes held out for precision/recall."""
    threshold: float = 0.5
    """Probability at or above which a frame counts as success (metrics and the env wrapper)."""
    seed: int = 0
    """Seed of the split, initialisation, sampling and augmentation."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda[:N]'."""

    def __post_init__(self) -> None:
        if self.success_frames < 1 or self.steps < 1 or self.batch_size < 2 or self.hidden_dim < 1:
            raise ValueError(
                "success_frames, steps, hidden_dim >= 1 and batch_size >= 2 expected, got "
                f"{self.success_frames}, {self.steps}, {self.hidden_dim}, {self.batch_size}"
            )
        if not 0.0 < self.val_fraction < 1.0 or not 0.0 < self.threshold < 1.0:
            raise ValueError(f"val_fraction and threshold: expected values in (0, 1), got {self.val_fraction}, "
                             f"{self.threshold}")


class RewardClassifier(nn.Module):
    """Camera frames -> success logit."""

    def __init__(self, camera_shapes: Mapping[str, tuple[int, int]], config: RewardClassifierConfig) -> None:
        super().__init__()
        self.config = config
        spec = {name: ((h, w, 3), np.uint8) for name, (h, w) in camera_shapes.items()}
        self.encoder = ImageEncoder(spec, config.encoder)
        self.head = nn.Sequential(
            nn.Linear(self.encoder.output_dim, config.hidden_dim), nn.Dropout(config.dropout),
            nn.LayerNorm(config.hidden_dim), nn.ReLU(), nn.Linear(config.hidden_dim, 1),
        )

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self.encoder.cameras)

    def forward(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        return self.head(self.encoder(obs)).squeeze(-1)  # (B,) logits

    @torch.no_grad()
    def predict_proba(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> float | np.ndarray:
        """Success probability of one env observation (float) or of a batch (B,) array."""
        name = self.cameras[0]
        single = np.ndim(obs[name]) == 3
        batch = {k: np.asarray(obs[k])[None] if single else obs[k] for k in self.cameras}
        was_training = self.training
        self.eval()
        try:
            p = torch.sigmoid(self(batch)).cpu().numpy()
        finally:
            self.train(was_training)
        return float(p[0]) if single else p

    def save(self, directory: Path, metrics: Mapping[str, Any] | None = None) -> None:
        from robot.config import to_dict
        from robot.core.checkpoint import save_tensors

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"config": to_dict(self.config), "cameras": {k: list(v) for k, v in self.encoder.cameras.items()}}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_tensors(directory / WEIGHTS_FILE, {k: v.cpu() for k, v in self.state_dict().items()})
        if metrics is not None:
            (directory / METRICS_FILE).write_text(json.dumps(dict(metrics), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, device: str | torch.device = "cpu") -> RewardClassifier:
        from robot.config import from_dict
        from robot.core.checkpoint import load_tensors

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory}: no {name}; expected a folder written by "
                                        "'robot reward-classifier train'")
        meta = json.loads((directory / CONFIG_FILE).read_text())
        config = from_dict(RewardClassifierConfig(), meta["config"])
        # Weights come from the file: a pretrained backbone path need not exist where the model is used.
        config.encoder.pretrained_path = ""
        model = cls({k: tuple(v) for k, v in meta["cameras"].items()}, config)
        model.load_state_dict(load_tensors(directory / WEIGHTS_FILE))
        return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# Data from an episode store
# ---------------------------------------------------------------------------------------------
@dataclass
class LabelledFrames:
    """Frames per camera (N, H, W, 3) uint8, labels (N,) float32, and the episode each came from."""

    frames: dict[str, np.ndarray]
    labels: np.ndarray
    episode: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def camera_keys(store, cameras: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Camera name -> (H, W): the requested ones (checked) or every uint8 (H, W, 3) observation."""
    specs = store.schema.observation
    is_camera = {k: len(s.shape) == 3 and s.shape[2] == 3 and s.dtype == "uint8" for k, s in specs.items()}
    names = cameras or tuple(k for k, camera in is_camera.items() if camera)
    if not names:
        raise ValueError(f"{store.path}: no camera observations (uint8 H x W x 3); observations are {list(specs)}")
    for name in names:
        spec = specs.get(name)
        if spec is None or len(spec.shape) != 3 or spec.shape[2] != 3 or spec.dtype != "uint8":
            raise ValueError(f"{store.path}: camera {name!r}: expected a uint8 (H, W, 3) observation, store has "
                             f"{'none' if spec is None else f'{spec.shape} {spec.dtype}'}")
    return {name: (specs[name].shape[0], specs[name].shape[1]) for name in names}


def labelled_frames(store, cameras: tuple[str, ...], episodes: list[int], success_frames: int) -> LabelledFrames:
    """Positives and negatives of `episodes` (see the module docstring for the labelling rule)."""
    frames: dict[str, list[np.ndarray]] = {k: [] for k in cameras}
    labels, owner = [], []
    for index in episodes:
        ep = store.episode(index)
        data = ep.load([f"observation/{k}" for k in cameras])
        rows = len(ep) + 1  # T + 1 observations
        if ep.metadata.success:
            pos = np.arange(max(0, rows - success_frames), rows)
            neg = np.arange(0, max(0, rows - 2 * success_frames))
        else:
            pos, neg = np.arange(0), np.arange(rows)
        keep = np.concatenate([pos, neg])
        for k in cameras:
            frames[k].append(data[f"observation/{k}"][keep])
        labels.append(np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]))
        owner.append(np.full(len(keep), index))
    return LabelledFrames(
        {k: np.concatenate(v) for k, v in frames.items()},
        np.concatenate(labels).astype(np.float32),
        np.concatenate(owner).astype(np.int64),
    )


def split_episodes(store, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Train / held-out episode indices, split within successes and within failures (episodes whose
    success is unknown are not used)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for success in (True, False):
        ids = np.array([e.index for e in store.episodes(success=success)])
        if len(ids) < 2:
            raise ValueError(
                f"{store.path}: {len(ids)} {'successful' if success else 'failed'} episode(s); need at least 2 "
                "(one to train on, one to hold out) of each"
            )
        ids = rng.permutation(ids)
        n_val = min(len(ids) - 1, max(1, math.ceil(val_fraction * len(ids))))
        val += ids[:n_val].tolist()
        train += ids[n_val:].tolist()
    return sorted(train), sorted(val)


def classification_metrics(prob: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = prob >= threshold
    positive = labels > 0.5
    tp = int((predicted & positive).sum())
    fp = int((predicted & ~positive).sum())
    fn = int((~predicted & positive).sum())
    return {
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "accuracy": float((predicted == positive).mean()),
        "positives": int(positive.sum()),
        "negatives": int((~positive).sum()),
    }


def predict_frames(model: RewardClassifier, data: LabelledFrames, batch: int = 256) -> np.ndarray:
    out = [model.predict_proba({k: v[i : i + batch] for k, v in data.frames.items()})
           for i in range(0, len(data), batch)]
    return np.concatenate(out) if out else np.zeros(0)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train_reward_classifier(
    store, config: RewardClassifierConfig, progress: Callable[[int, float], None] | None = None
) -> tuple[RewardClassifier, dict[str, Any]]:
    """Train on the store's train episodes; returns the model and held-out metrics."""
    from robot.core.device import resolve_device

    device = resolve_device(config.device)
    cameras = camera_keys(store, config.cameras)
    train_eps, val_eps = split_episodes(store, config.val_fraction, config.seed)
    train = labelled_frames(store, tuple(cameras), train_eps, config.success_frames)
    val = labelled_frames(store, tuple(cameras), val_eps, config.success_frames)
    pos, neg = np.flatnonzero(train.labels > 0.5), np.flatnonzero(train.labels < 0.5)
    if not len(pos) or not len(neg):
        raise ValueError(f"{store.path}: training episodes give {len(pos)} positive and {len(neg)} negative frames")
    torch.manual_seed(config.seed)
    model = RewardClassifier(cameras, config).to(device).train()
    updater = Updater(model.parameters(), OptimConfig(lr=config.lr))
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    half = config.batch_size // 2
    labels = torch.cat([torch.ones(half), torch.zeros(config.batch_size - half)]).to(device)
    for step in range(config.steps):
        rows = np.concatenate([rng.choice(pos, half), rng.choice(neg, config.batch_size - half)])  # balanced
        obs = {k: torch.as_tensor(v[rows], device=device) for k, v in train.frames.items()}
        obs = augment_observations(obs, tuple(cameras), config.augment_pad, gen)
        loss = F.binary_cross_entropy_with_logits(model(obs), labels)
        updater.update(loss)
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    model.eval()
    metrics = {
        **classification_metrics(predict_frames(model, val), val.labels, config.threshold),
        "threshold": config.threshold,
        "train_episodes": train_eps,
        "val_episodes": val_eps,
        "train_positives": int(len(pos)),
        "train_negatives": int(len(neg)),
    }
    return model, metrics


# ---------------------------------------------------------------------------------------------
# Env wrapper
# ---------------------------------------------------------------------------------------------
class SuccessDetector(Protocol):
    def predict_proba(self, obs: Mapping[str, np.ndarray]) -> float: ...


class RewardClassifierWrapper(gym.Wrapper):
    """Reward 1 and (optionally) termination when the classifier's success probability reaches the
    threshold, reward 0 otherwise; the env's own reward moves to info["env_reward"].

    Reference: SERL's wrapper (threshold 0.5) and HIL-SERL's (0.7-0.85). info gets
    "classifier_prob" and "is_success"; time limits stay truncations.
    """

    def __init__(self, env: gym.Env, classifier: SuccessDetector, threshold: float = 0.5,
                 terminate_on_success: bool = True) -> None:
        super().__init__(env)
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold: expected a probability in (0, 1), got {threshold}")
        if not isinstance(env.observation_space, gym.spaces.Dict):
            raise ValueError(f"reward classifier wrapper: expected an env with dict (camera) observations, got "
                             f"{type(env.observation_space).__name__}; make the env with image_obs=True")
        self.classifier, self.threshold, self.terminate_on_success = classifier, threshold, terminate_on_success

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        prob = float(self.classifier.predict_proba(obs))
        success = prob >= self.threshold
        info = {**info, "env_reward": env_reward, "classifier_prob": prob, "is_success": success}
        return obs, float(success), bool(terminated or (success and self.terminate_on_success)), truncated, info
