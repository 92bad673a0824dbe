"""Image encoders for pixel-based agents and classifiers: camera images + proprioception -> one vector.

Recipe (reference: SERL `vision/resnet_v1.py`, `common/encoding.py`; HIL-SERL; LeRobot `gaussian_actor`):
- per camera a backbone: a small conv net trained from scratch, or a ResNet-10/18 that loads pretrained
  weights from a local file (torchvision / timm key names) and is usually frozen;
- per camera a trainable head: SERL's spatial learned embeddings (K learned spatial maps per channel,
  a weighted sum over positions that keeps *where* things are, which global average pooling throws
  away) -> Dropout -> Linear 256 -> LayerNorm -> tanh;
- proprioception: Linear 64 -> LayerNorm -> tanh; all parts concatenated.

Contract that makes the usual pixel bugs impossible rather than silent:
- images enter as uint8 (B, H, W, 3), exactly as the env and the replay buffer hold them; the encoder
  checks dtype and shape per camera (a channels-first, resized or float image is an error naming the
  camera and the expected shape), moves them to its device and normalises them once (/255, plus the
  ImageNet mean/std for pretrained ResNets), so no caller can forget or double-apply normalisation;
- a frozen backbone runs under `no_grad` in eval mode, and its normalisation layers never update
  running statistics (`FrozenBatchNorm2d`), so actor-time (batch 1) and learner-time features agree.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderKind(enum.Enum):
    SMALL = "small"
    RESNET10 = "resnet10"
    RESNET18 = "resnet18"


class NormKind(enum.Enum):
    FROZEN_BATCH = "frozen-batch"
    GROUP = "group"


RESNET_STAGES = {EncoderKind.RESNET10: (1, 1, 1, 1), EncoderKind.RESNET18: (2, 2, 2, 2)}


@dataclass
class EncoderConfig:
    """Image encoder of pixel agents and reward classifiers."""

    kind: EncoderKind = EncoderKind.SMALL
    """Backbone per camera: 'small' (conv net from scratch), 'resnet10' or 'resnet18' (SERL: resnet10)."""
    pretrained_path: str = ""
    """Local weight file of the ResNet (.pt/.pth/.bin via torch.load, or .safetensors), torchvision/timm key
    names; empty: random init."""
    freeze: bool = True
    """Freeze a pretrained ResNet backbone (SERL: frozen); ignored without pretrained_path."""
    norm: NormKind = NormKind.FROZEN_BATCH
    """ResNet normalisation: 'frozen-batch' (torchvision weights, statistics never updated) or 'group'
    (SERL's GroupNorm, 4 groups)."""
    small_channels: tuple[int, ...] = (32, 32, 32, 32)
    """Channels of the small conv net's 3x3 layers."""
    small_downsample_layers: int = 3
    """Leading layers of the small conv net with stride 2 (each halves the image; 3 maps 128 px to 16); the
    rest have stride 1."""
    num_spatial_embeddings: int = 8
    """Learned spatial maps per feature channel (SERL: 8)."""
    latent_dim: int = 256
    """Output width per camera (SERL: 256)."""
    proprio_dim: int = 64
    """Output width of the proprioception embedding (SERL: 64); 0 feeds it through unchanged."""
    dropout: float = 0.1
    """Dropout after the spatial embeddings while training (SERL: 0.1)."""

    def __post_init__(self) -> None:
        self.kind, self.norm = EncoderKind(self.kind), NormKind(self.norm)
        if not self.small_channels or self.small_downsample_layers < 0:
            raise ValueError(
                f"small_channels: expected at least one layer, small_downsample_layers >= 0; got "
                f"{self.small_channels} and {self.small_downsample_layers}"
            )
        for name in ("num_spatial_embeddings", "latent_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if self.proprio_dim < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"proprio_dim >= 0 and dropout in [0, 1) expected, got {self.proprio_dim}, {self.dropout}")
        if self.pretrained_path and self.kind is EncoderKind.SMALL:
            raise ValueError("pretrained_path: the 'small' encoder has no pretrained weights; use kind resnet10/18")

    @property
    def frozen(self) -> bool:
        return bool(self.pretrained_path) and self.freeze


# ---------------------------------------------------------------------------------------------
# Backbones (input: float (B, 3, H, W) in [0, 1]; output: feature map (B, C, h, w))
# ---------------------------------------------------------------------------------------------
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm that always uses its stored statistics (torchvision's key names and buffers).

    RL batches are non-stationary and the actor sees one image at a time; updating batch statistics
    would make learner and actor features disagree, so the statistics are constants. The affine
    weight and bias stay trainable unless the backbone is frozen.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def _norm(kind: NormKind, channels: int) -> nn.Module:
    return FrozenBatchNorm2d(channels) if kind is NormKind.FROZEN_BATCH else nn.GroupNorm(4, channels)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); attribute names match torchvision's."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: NormKind) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), _norm(norm, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet-10/18 trunk (no classifier) with torchvision's module names, so its state dict keys are
    torchvision's (and timm's, which uses the same names): conv1, bn1, layer1.0.conv1, ..."""

    def __init__(self, stages: tuple[int, ...], norm: NormKind) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = _norm(norm, 64)
        widths, in_ch = (64, 128, 256, 512), 64
        for i, (blocks, width) in enumerate(zip(stages, widths, strict=True)):
            layer = [BasicBlock(in_ch if j == 0 else width, width, (1 if i == 0 else 2) if j == 0 else 1, norm)
                     for j in range(blocks)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            in_ch = width
        self.out_channels = 512
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std  # ImageNet statistics: what pretrained weights expect
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SmallConvNet(nn.Module):
    """3x3 conv + ReLU layers (DrQ-style encoder), trained from scratch with the critic."""

    def __init__(self, channels: tuple[int, ...], downsample_layers: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, width in enumerate(channels):
            layers += [nn.Conv2d(in_ch, width, 3, 2 if i < downsample_layers else 1, 1), nn.ReLU()]
            in_ch = width
        self.net = nn.Sequential(*layers)
        self.out_channels = in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)  # centred pixels


def make_backbone(config: EncoderConfig) -> nn.Module:
    if config.kind is EncoderKind.SMALL:
        return SmallConvNet(config.small_channels, config.small_downsample_layers)
    backbone = ResNet(RESNET_STAGES[config.kind], config.norm)
    if config.pretrained_path:
        load_pretrained(backbone, config.pretrained_path)
    return backbone


def load_pretrained(backbone: nn.Module, path: str | Path) -> None:
    """Load a torchvision/timm-format state dict into `backbone`; classifier keys (`fc.*`) are ignored.

    Every missing, unexpected or mis-shaped key is an error naming the file and the keys, so a
    ResNet-18 file loaded into a ResNet-10, or a GroupNorm model loaded with BatchNorm weights, fails
    loudly instead of running with random layers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained_path {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle/zip errors come in many types
            raise ValueError(f"pretrained_path {path}: not a torch state dict file ({err})") from err
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained_path {path}: expected a mapping of parameter names to tensors")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    expected = backbone.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        problems = [f"missing keys {few(missing)}" if missing else "",
                    f"unexpected keys {few(unexpected)}" if unexpected else "",
                    f"shape mismatches {few(shapes)}" if shapes else ""]
        raise ValueError(
            f"pretrained_path {path}: does not fit a {type(backbone).__name__} with torchvision key names: "
            + "; ".join(p for p in problems if p)
        )
    backbone.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------
class SpatialLearnedEmbeddings(nn.Module):
    """SERL's pooling: for each channel c and map k, sum_{h,w} x[c,h,w] * W[c,h,w,k] -> (B, C*K)."""

    def __init__(self, channels: int, height: int, width: int, num_features: int) -> None:
        super().__init__()
        fan_in = height * width  # lecun-normal over the summed positions
        self.kernel = nn.Parameter(torch.randn(channels, height, width, num_features) / math.sqrt(fan_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,chwk->bck", x, self.kernel).flatten(1)  # (B, C*K)


class CameraHead(nn.Module):
    """Spatial embeddings -> Dropout -> Linear -> LayerNorm -> tanh (one per camera)."""

    def __init__(self, channels: int, height: int, width: int, config: EncoderConfig) -> None:
        super().__init__()
        self.pool = SpatialLearnedEmbeddings(channels, height, width, config.num_spatial_embeddings)
        self.dropout = nn.Dropout(config.dropout)
        self.proj = nn.Linear(channels * config.num_spatial_embeddings, config.latent_dim)
        self.norm = nn.LayerNorm(config.latent_dim)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.proj(self.dropout(self.pool(fmap)))))


# ---------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------
ObsSpec = Mapping[str, tuple[tuple[int, ...], np.dtype | str | type]]


def split_obs_spec(obs_spec: ObsSpec) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Camera name -> (H, W) for uint8 (H, W, 3) entries; proprio name -> size for 1-D float entries."""
    cameras, proprio = {}, {}
    for name, (shape, dtype) in obs_spec.items():
        shape, dtype = tuple(shape), np.dtype(dtype)
        if len(shape) == 3 and shape[2] == 3 and dtype == np.uint8:
            cameras[name] = (shape[0], shape[1])
        elif len(shape) == 1 and dtype.kind == "f":
            proprio[name] = shape[0]
        else:
            raise ValueError(
                f"observation {name!r}: expected a uint8 (H, W, 3) camera image or a 1-D float vector, "
                f"got shape {shape} {dtype}"
            )
    if not cameras:
        raise ValueError(f"image encoder: no camera images among the observations {list(obs_spec)}")
    return cameras, proprio


class ImageEncoder(nn.Module):
    """Observation dict -> (B, output_dim): per-camera backbone + head, plus proprioception.

    `features(obs)` runs the backbones, `embed(fmaps, obs)` the trainable heads; the split lets an
    agent run a frozen backbone once per batch and share its feature maps between the online and the
    target heads.
    """

    def __init__(self, obs_spec: ObsSpec, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.cameras, self.proprio_dims = split_obs_spec(obs_spec)
        self.backbones = nn.ModuleDict({name: make_backbone(config) for name in self.cameras})
        if config.frozen:
            self.backbones.requires_grad_(False)
        heads = {}
        for name, (h, w) in self.cameras.items():
            with torch.no_grad():  # the feature map size of this camera's resolution
                fmap = self.backbones[name].eval()(torch.zeros(1, 3, h, w))
            heads[name] = CameraHead(fmap.shape[1], fmap.shape[2], fmap.shape[3], config)
        self.heads = nn.ModuleDict(heads)
        proprio_in = sum(self.proprio_dims.values())
        self.proprio = None
        if proprio_in and config.proprio_dim:
            self.proprio = nn.Sequential(nn.Linear(proprio_in, config.proprio_dim), nn.LayerNorm(config.proprio_dim),
                                         nn.Tanh())
        self.output_dim = len(self.cameras) * config.latent_dim + (
            (config.proprio_dim or proprio_in) if proprio_in else 0
        )

    @property
    def frozen(self) -> bool:
        return self.config.frozen

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.frozen:
            self.backbones.eval()  # a frozen backbone never leaves eval mode
        return self

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def images(self, obs: Mapping[str, np.ndarray | torch.Tensor], name: str) -> torch.Tensor:
        """Checked uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1] on the encoder's device."""
        if name not in obs:
            raise KeyError(f"image encoder: observation has no camera {name!r}; got keys {sorted(obs)}")
        x = torch.as_tensor(obs[name], device=self.device)
        h, w = self.cameras[name]
        if x.dtype != torch.uint8 or x.dim() != 4 or tuple(x.shape[1:]) != (h, w, 3):
            raise ValueError(
                f"camera {name!r}: expected uint8 images of shape (B, {h}, {w}, 3) (channels last, as the env "
                f"returns them, unnormalised), got {x.dtype} {tuple(x.shape)}"
            )
        return x.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)

    def features(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, torch.Tensor]:
        """Backbone feature maps per camera (no graph when frozen)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            return {name: self.backbones[name](self.images(obs, name)) for name in self.cameras}

    def embed(self, fmaps: Mapping[str, torch.Tensor], obs: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        parts = [self.heads[name](fmaps[name]) for name in self.cameras]
        if self.proprio_dims:
            state = torch.cat([self._vector(obs, k, d) for k, d in self.proprio_dims.items()], dim=-1)
            parts.append(self.proprio(state) if self.proprio is not None else state)
        return torch.cat(parts, dim=-1)

    def forward(self, obs: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        return self.embed(self.features(obs), obs)

    def _vector(self, obs: Mapping[str, np.ndarray | torch.Tensor], name: str, dim: int) -> torch.Tensor:
        if name not in obs:
            raise KeyError(f"image encoder: observation has no entry {name!r}; got keys {sorted(obs)}")
        x = torch.as_tensor(obs[name], device=self.device, dtype=torch.float32)
        if x.dim() != 2 or x.shape[1] != dim:
            raise ValueError(f"observation {name!r}: expected shape (B, {dim}), got {tuple(x.shape)}")
        return x
