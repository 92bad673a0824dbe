"""DrQ random shift: pad each image by replicating its border, crop back at a random offset.

Reference: SERL/DrQ edge-pad 4 px + random crop, independently for obs and next_obs, inside the
update; LeRobot does the same on sampling. Written as one gather on the learner's device: row y of
the output reads row clamp(y + dy - pad, 0, H - 1) of the input (and likewise for columns), which is
exactly "replicate-pad by `pad`, then crop at (dy, dx)" without building the padded tensor. It works
on uint8 images, so augmentation happens before normalisation and never changes pixel values, only
where they are: every output is an exact integer shift of its input by (dy - pad, dx - pad).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def shift_images(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Images (B, H, W, C) translated by integer (dy[b], dx[b]) with edge replication.

    out[b, y, x] = images[b, clamp(y + dy[b]), clamp(x + dx[b])]: positive dy shows content from
    further down (the image moves up).
    """
    b, h, w = images.shape[:3]
    rows = (torch.arange(h, device=images.device) + dy.view(b, 1)).clamp_(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=images.device) + dx.view(b, 1)).clamp_(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=images.device).view(b, 1, 1)
    return images[batch, rows.view(b, h, 1), cols.view(b, 1, w)]  # (B, H, W, C)


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each image of (B, H, W, C) shifted by its own random integer offset in [-pad, pad] per axis."""
    if pad == 0:
        return images
    if images.dim() != 4:
        raise ValueError(f"random_shift: expected images of shape (B, H, W, C), got {tuple(images.shape)}")
    offsets = torch.randint(-pad, pad + 1, (2, images.shape[0]), device=images.device, generator=generator)
    return shift_images(images, offsets[0], offsets[1])


def augment_observations(
    obs: Mapping[str, torch.Tensor], cameras: list[str] | tuple[str, ...], pad: int, generator: torch.Generator | None
) -> dict[str, torch.Tensor]:
    """A copy of `obs` with every camera image randomly shifted (each camera and row independently)."""
    return {k: random_shift(v, pad, generator) if k in cameras else v for k, v in obs.items()}
