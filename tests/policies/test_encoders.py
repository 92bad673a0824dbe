"""Image encoders: shapes, pretrained loading in torchvision key format, freezing, input checks."""

import numpy as np
import pytest
import torch

from policies.encoders import (
    EncoderConfig,
    EncoderKind,
    ImageEncoder,
    NormKind,
    ResNet,
    SpatialLearnedEmbeddings,
    load_pretrained,
)

# torchvision's resnet18 state dict has exactly these names (conv1, bn1, layerX.Y.convZ/bnZ,
# layerX.0.downsample.{0,1}, fc); listed here so the format check does not depend on our own module.
TORCHVISION_RESNET18_PREFIXES = (
    ["conv1.weight"] + [f"bn1.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    + [f"layer{i}.{j}.conv{k}.weight" for i in range(1, 5) for j in range(2) for k in (1, 2)]
    + [f"layer{i}.0.downsample.0.weight" for i in range(2, 5)]
    + [f"layer{i}.0.downsample.1.running_var" for i in range(2, 5)]
)


def spec(cameras=("front", "wrist"), size=32, proprio=5):
    out = {name: ((size, size, 3), np.uint8) for name in cameras}
    if proprio:
        out["state"] = ((proprio,), np.float32)
    return out


def images(batch, size=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def test_small_encoder_output_shape_with_two_cameras_and_proprio():
    config = EncoderConfig(latent_dim=16, proprio_dim=8)
    enc = ImageEncoder(spec(), config)
    obs = {"front": images(4), "wrist": images(4, seed=1), "state": np.zeros((4, 5), np.float32)}
    out = enc(obs)
    assert out.shape == (4, 2 * 16 + 8) == (4, enc.output_dim)
    assert torch.all(out.abs() <= 1.0)  # tanh outputs


def test_cameras_have_their_own_backbone_and_head():
    enc = ImageEncoder(spec(), EncoderConfig(latent_dim=8))
    assert enc.backbones["front"] is not enc.backbones["wrist"]
    w_front = enc.heads["front"].pool.kernel
    w_wrist = enc.heads["wrist"].pool.kernel
    assert w_front.data_ptr() != w_wrist.data_ptr()


def test_spatial_embeddings_weight_each_position():
    pool = SpatialLearnedEmbeddings(channels=2, height=3, width=4, num_features=5)
    x = torch.randn(6, 2, 3, 4)
    expected = (x[..., None] * pool.kernel[None]).sum(dim=(2, 3)).flatten(1)  # (B, C*K)
    torch.testing.assert_close(pool(x), expected)
    # Unlike average pooling it sees where a feature is: moving a blob changes the output.
    a, b = torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4)
    a[0, :, 0, 0], b[0, :, 2, 3] = 1.0, 1.0
    assert not torch.allclose(pool(a), pool(b))


def test_resnet10_and_18_feature_maps_at_128():
    for kind, blocks in ((EncoderKind.RESNET10, 1), (EncoderKind.RESNET18, 2)):
        net = ResNet((blocks,) * 4, NormKind.FROZEN_BATCH)
        assert net(torch.zeros(2, 3, 128, 128)).shape == (2, 512, 4, 4), kind


def test_torchvision_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    source = ResNet((2, 2, 2, 2), NormKind.FROZEN_BATCH)
    with torch.no_grad():  # non-trivial statistics so a skipped buffer would show
        for name, buf in source.named_buffers():
            if name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                buf.normal_()
    state = source.state_dict()
    assert set(TORCHVISION_RESNET18_PREFIXES) <= set(state)
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # classifier: ignored
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)

    config = EncoderConfig(kind=EncoderKind.RESNET18, pretrained_path=str(path), latent_dim=8)
    enc = ImageEncoder(spec(("front",), size=64, proprio=0), config)
    loaded = enc.backbones["front"].state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    # Frozen: no trainable backbone weights, and no graph through it.
    assert not any(p.requires_grad for p in enc.backbones.parameters())
    assert all(p.requires_grad for p in enc.heads.parameters())
    fmaps = enc.features({"front": images(2, 64)})
    assert not fmaps["front"].requires_grad

    # safetensors files load too.
    from safetensors.torch import save_file

    st_path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(st_path))
    net = ResNet((2, 2, 2, 2), NormKind.FROZEN_BATCH)
    load_pretrained(net, st_path)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in source.state_dict().items())


def test_wrong_file_gives_a_clear_error(tmp_path):
    resnet18 = tmp_path / "r18.pt"
    torch.save(ResNet((2, 2, 2, 2), NormKind.FROZEN_BATCH).state_dict(), resnet18)
    with pytest.raises(ValueError, match=r"r18\.pt.*unexpected keys layer1\.1\.bn1\.bias"):
        load_pretrained(ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH), resnet18)
    with pytest.raises(ValueError, match=r"missing keys bn1\.running_mean|unexpected keys bn1\.num_batches"):
        load_pretrained(ResNet((2, 2, 2, 2), NormKind.GROUP), resnet18)
    state = ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    bad_shape = tmp_path / "shape.pt"
    torch.save(state, bad_shape)
    expected = r"shape mismatches conv1\.weight: file \(64, 3, 3, 3\), model \(64, 3, 7, 7\)"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH), bad_shape)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_pretrained(ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH), tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a torch state dict"):
        load_pretrained(ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH), garbage)


def test_frozen_backbone_statistics_never_change_in_training():
    # serl.md 1.3 / LeRobot: the actor sees single images, the learner batches; batch statistics would
    # make their features disagree. FrozenBatchNorm uses stored statistics in every mode.
    net = ResNet((1, 1, 1, 1), NormKind.FROZEN_BATCH).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(8, 3, 64, 64)
    out_batch = net(x)
    out_single = torch.cat([net(x[i : i + 1]) for i in range(8)])
    torch.testing.assert_close(out_batch, out_single, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    ("obs", "match"),
    [
        ({"front": np.zeros((2, 3, 32, 32), np.uint8)}, r"camera 'front': expected uint8 images of shape \(B, 32, 32"),
        ({"front": np.zeros((2, 32, 32, 3), np.float32)}, r"camera 'front'.*unnormalised.*float32"),
        ({"front": np.zeros((2, 64, 64, 3), np.uint8)}, r"\(B, 32, 32, 3\).*\(2, 64, 64, 3\)"),
        ({"front": np.zeros((32, 32, 3), np.uint8)}, r"\(B, 32, 32, 3\).*\(32, 32, 3\)"),
        ({"wrist": np.zeros((2, 32, 32, 3), np.uint8)}, r"no camera 'front'"),
    ],
    ids=["channels-first", "float-normalised", "wrong-size", "no-batch-dim", "missing-camera"],
)
def test_image_errors_name_the_camera_and_expected_shape(obs, match):
    enc = ImageEncoder(spec(("front",), proprio=0), EncoderConfig(latent_dim=8))
    with pytest.raises((ValueError, KeyError), match=match):
        enc(obs)


def test_observation_spec_rejects_unknown_layouts():
    with pytest.raises(ValueError, match=r"observation 'front': expected a uint8 \(H, W, 3\)"):
        ImageEncoder({"front": ((3, 32, 32), np.uint8)}, EncoderConfig())
    with pytest.raises(ValueError, match="no camera images"):
        ImageEncoder({"state": ((4,), np.float32)}, EncoderConfig())
    with pytest.raises(ValueError, match="small' encoder has no pretrained"):
        EncoderConfig(pretrained_path="x.pt")


def test_pretrained_resnet_normalises_uint8_images_once_with_imagenet_statistics():
    # The encoder owns normalisation: callers pass raw uint8 frames, never pre-normalised ones.
    torch.manual_seed(0)
    enc = ImageEncoder(spec(("front",), size=64, proprio=0), EncoderConfig(kind=EncoderKind.RESNET10, latent_dim=8))
    raw = images(2, 64)
    x = torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    net = enc.backbones["front"]
    by_hand = net.layer4(net.layer3(net.layer2(net.layer1(
        torch.nn.functional.max_pool2d(torch.relu(net.bn1(net.conv1((x - mean) / std))), 3, 2, 1)))))
    torch.testing.assert_close(enc.features({"front": raw})["front"], by_hand)
    assert not any("mean" in k or k.endswith(".std") for k in net.state_dict() if "running" not in k)
