"""DrQ random shift: every output is an exact integer shift (with edge replication) of its input."""

import numpy as np
import torch

from policies.augmentation import augment_observations, random_shift, shift_images


def reference_shift(image: np.ndarray, dy: int, dx: int, pad: int) -> np.ndarray:
    """Replicate-pad by `pad`, crop at (pad + dy, pad + dx): the textbook definition."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    return padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def coded_images(batch: int, h: int, w: int) -> torch.Tensor:
    """uint8 images whose pixel (y, x) holds (y, x, b): the centre pixel reveals the shift."""
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([ys, xs, np.zeros_like(ys)], axis=-1).astype(np.uint8)
    out = np.repeat(img[None], batch, axis=0)
    out[..., 2] = np.arange(batch, dtype=np.uint8)[:, None, None]
    return torch.from_numpy(out)


def test_each_augmented_image_is_an_exact_integer_shift():
    pad, h, w = 4, 20, 24
    images = coded_images(64, h, w)
    gen = torch.Generator().manual_seed(0)
    out = random_shift(images, pad, gen)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    shifts = set()
    for b in range(len(images)):
        dy = int(out[b, h // 2, w // 2, 0]) - h // 2
        dx = int(out[b, h // 2, w // 2, 1]) - w // 2
        assert -pad <= dy <= pad and -pad <= dx <= pad
        np.testing.assert_array_equal(out[b].numpy(), reference_shift(images[b].numpy(), dy, dx, pad))
        shifts.add((dy, dx))
    assert len(shifts) > 20  # rows draw their own offsets


def test_shift_images_matches_pad_and_crop_on_random_content():
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.integers(0, 256, (9, 12, 10, 3), dtype=np.uint8))
    dy = torch.tensor([-4, -2, 0, 4, 1, 3, -3, 2, 0])
    dx = torch.tensor([4, 0, -4, -1, 2, -3, 3, 1, 0])
    out = shift_images(images, dy, dx)
    for b in range(9):
        np.testing.assert_array_equal(out[b].numpy(), reference_shift(images[b].numpy(), int(dy[b]), int(dx[b]), 4))


def test_seeded_generator_reproduces_and_zero_pad_is_identity():
    images = coded_images(8, 16, 16)
    a = random_shift(images, 4, torch.Generator().manual_seed(3))
    b = random_shift(images, 4, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert random_shift(images, 0) is images


def test_observation_dicts_shift_cameras_only_and_independently():
    obs = {"front": coded_images(32, 16, 16), "wrist": coded_images(32, 16, 16), "state": torch.arange(32.0)}
    out = augment_observations(obs, ("front", "wrist"), 4, torch.Generator().manual_seed(0))
    assert out["state"] is obs["state"]
    assert not torch.equal(out["front"], out["wrist"])  # each camera draws its own offsets
