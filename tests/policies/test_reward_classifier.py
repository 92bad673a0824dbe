"""Reward classifier: labels from an episode store, training with held-out precision/recall, save/load,
the CLI, and the env wrapper that turns success probability into reward and termination."""

import gymnasium as gym
import numpy as np
import pytest

from data.episode_store import EpisodeStore
from data.schema import EpisodeMetadata, FieldSpec, Source, StoreSchema
from policies.encoders import EncoderConfig
from policies.reward_classifier import (
    RewardClassifier,
    RewardClassifierConfig,
    RewardClassifierWrapper,
    labelled_frames,
    split_episodes,
    train_reward_classifier,
)

SIZE, STEPS, K = 16, 8, 4


def frame(rng, success: bool) -> np.ndarray:
    """Dim noise; a success frame also shows a bright green 4x4 block somewhere, a failure frame may
    show a red one (so 'any block' is not the answer)."""
    img = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
    r, c = rng.integers(0, SIZE - 4, 2)
    if success:
        img[r : r + 4, c : c + 4] = (40, 250, 40)
    elif rng.uniform() < 0.5:
        img[r : r + 4, c : c + 4] = (250, 40, 40)
    return img


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("rc") / "store"
    observation = {"front": FieldSpec((SIZE, SIZE, 3), "uint8"), "state": FieldSpec((2,), "float32")}
    schema = StoreSchema(observation=observation, action=FieldSpec((2,), "float32"))
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, schema) as store:
        for i in range(20):
            success = i % 2 == 0
            # Observations 0..STEPS; the last K of a successful episode show success.
            frames = [frame(rng, success and t > STEPS - K) for t in range(STEPS + 1)]
            writer = store.begin_episode(EpisodeMetadata(task="toy", robot="sim", source=Source.DEMO, seed=i))
            for t in range(STEPS):
                writer.append({"observation": {"front": frames[t], "state": np.zeros(2, np.float32)},
                               "action": np.zeros(2, np.float32), "reward": 0.0, "terminated": False,
                               "truncated": t == STEPS - 1})
            writer.commit({"front": frames[STEPS], "state": np.zeros(2, np.float32)}, success=success)
    return path


def small_config(**kw):
    encoder = EncoderConfig(small_channels=(16, 16), small_downsample_layers=1, latent_dim=32, proprio_dim=0,
                            num_spatial_embeddings=4)
    return RewardClassifierConfig(encoder=encoder, hidden_dim=32, success_frames=K, steps=150, batch_size=32,
                                  lr=1e-3, augment_pad=1, device="cpu", **kw)


def test_labels_are_the_last_k_frames_of_successes_and_all_failure_frames(store_path):
    store = EpisodeStore.open(store_path)
    data = labelled_frames(store, ("front",), [0, 1], K)
    owner0, owner1 = data.episode == 0, data.episode == 1
    # Success episode 0: K positives (the last K observations), negatives before the last 2K.
    assert data.labels[owner0].sum() == K and (~(data.labels[owner0] > 0)).sum() == STEPS + 1 - 2 * K
    assert data.labels[owner1].sum() == 0 and owner1.sum() == STEPS + 1
    # Positives show the green block (channel 1 bright), by construction of the store.
    assert all(img[..., 1].max() >= 250 for img in data.frames["front"][data.labels > 0])
    train, val = split_episodes(store, 0.2, seed=0)
    assert not set(train) & set(val)
    assert {store.metadata(i).success for i in val} == {True, False}


def test_trained_classifier_separates_held_out_episodes_and_round_trips(store_path, tmp_path):
    store = EpisodeStore.open(store_path)
    model, metrics = train_reward_classifier(store, small_config())
    assert metrics["precision"] >= 0.8 and metrics["recall"] >= 0.8, metrics
    model.save(tmp_path / "m", metrics)
    loaded = RewardClassifier.load(tmp_path / "m")
    data = labelled_frames(store, ("front",), metrics["val_episodes"], K)
    batch = {"front": data.frames["front"][:10]}
    np.testing.assert_allclose(loaded.predict_proba(batch), model.predict_proba(batch), rtol=1e-5, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        RewardClassifier.load(tmp_path)


def test_cli_train_and_eval(store_path, tmp_path, capsys):
    from robot.cli import main

    out = tmp_path / "clf"
    argv = ["reward-classifier", "train", str(store_path), "--out", str(out), "--steps", "60", "--batch_size", "16",
            "--encoder.small_channels", "8", "--encoder.latent_dim", "16", "--hidden_dim", "16",
            "--success_frames", str(K), "--device", "cpu"]
    assert main(argv) == 0
    assert {"config.json", "model.safetensors", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert main(["reward-classifier", "eval", str(store_path), "--model", str(out), "--episodes", "all"]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "recall" in text
    assert main(["reward-classifier", "train", str(store_path), "--out", str(out), "--steps", "0"]) == 2
    assert main(["reward-classifier", "eval", str(tmp_path / "nope"), "--model", str(out)]) == 2


class CounterEnv(gym.Env):
    """Dict observations whose image brightness is the step count x 50."""

    observation_space = gym.spaces.Dict({"front": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)})
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {"front": np.zeros((SIZE, SIZE, 3), np.uint8)}, {}

    def step(self, action):
        self.t += 1
        return {"front": np.full((SIZE, SIZE, 3), 50 * self.t, np.uint8)}, 7.0, False, self.t >= 10, {}


class BrightnessDetector:
    def predict_proba(self, obs):
        return float(obs["front"].mean()) / 255.0


def test_wrapper_gives_reward_and_termination_at_the_threshold():
    env = RewardClassifierWrapper(CounterEnv(), BrightnessDetector(), threshold=0.5)
    env.reset()
    rewards, terminated = [], False
    while not terminated:
        _, reward, terminated, truncated, info = env.step(np.zeros(1))
        rewards.append(reward)
        assert info["env_reward"] == 7.0 and info["is_success"] == (reward == 1.0)
    # Probabilities 50/255, 100/255 (< 0.5), 150/255 (>= 0.5): success and termination at step 3.
    assert rewards == [0.0, 0.0, 1.0] and not truncated
    env = RewardClassifierWrapper(CounterEnv(), BrightnessDetector(), threshold=0.5, terminate_on_success=False)
    env.reset()
    steps = [env.step(np.zeros(1)) for _ in range(4)]
    assert [s[1] for s in steps] == [0.0, 0.0, 1.0, 1.0] and not any(s[2] for s in steps)
    with pytest.raises(ValueError, match="threshold"):
        RewardClassifierWrapper(CounterEnv(), BrightnessDetector(), threshold=1.0)
    with pytest.raises(ValueError, match="dict \\(camera\\) observations"):
        RewardClassifierWrapper(gym.make("Pendulum-v1"), BrightnessDetector())


def test_wrapper_with_a_trained_classifier(store_path):
    store = EpisodeStore.open(store_path)
    model, _ = train_reward_classifier(store, small_config())

    class ReplayEnv(CounterEnv):  # shows a failure-like frame, then a success-like one
        def step(self, action):
            self.t += 1
            rng = np.random.default_rng(self.t)
            return {"front": frame(rng, success=self.t >= 2)}, 0.0, False, False, {}

    env = RewardClassifierWrapper(ReplayEnv(), model, threshold=0.5)
    env.reset()
    first, second = env.step(np.zeros(1)), env.step(np.zeros(1))
    assert first[1] == 0.0 and not first[2]
    assert second[1] == 1.0 and second[2] and second[4]["classifier_prob"] >= 0.5
