"""PandaPegInsert: success needs depth and a contact force that stayed within the controller's bound."""

import dataclasses

import numpy as np
import pytest

import envs
from envs.panda_peg_insert import OBS_LAYOUT, PEG_TIP_FROM_TCP_M, PandaPegInsertConfig, PandaPegInsertEnv


def press_beside_the_hole(env, down_action, steps=30):
    """Tip 3 cm beside the hole (on the board), then down with ``down_action`` per step; last info."""
    obs, _ = env.reset(seed=0)
    hole = obs[OBS_LAYOUT["hole_pos"]]
    for _ in range(steps):
        tcp = obs[OBS_LAYOUT["tcp_pos"]]
        high = tcp[2] - PEG_TIP_FROM_TCP_M > 0.06
        # At home the tool's x is the world's x and its y, z the world's -y, -z.
        action = np.array(
            [(hole[0] + 0.03 - tcp[0]) / 0.02, -(hole[1] - tcp[1]) / 0.02, 1.0 if high else down_action],
            dtype=np.float32,
        )
        obs, _, terminated, _, info = env.step(np.clip(action, -1, 1))
        assert not terminated
    return obs, info


def test_force_bound_is_the_controller_spring_bound_plus_tolerance():
    env = PandaPegInsertEnv()
    np.testing.assert_allclose(env.force_bound_n, 2000.0 * np.array([0.003, 0.003, 0.01]) + 5.0)
    _, info = env.reset(seed=0)
    assert info["force_ok"] and np.all(info["peak_force_n"] == 0.0)


def test_pressing_gently_holds_the_bound_and_measures_the_spring_force():
    env = PandaPegInsertEnv()
    obs, info = press_beside_the_hole(env, down_action=0.5)  # 1 cm per step onto the board
    assert info["force_ok"] and info["insert_depth_m"] < 0.001  # on the board (soft contact: < 1 mm in)
    # Resting on the board, pushed by the clipped spring: K * min(step, clip_z) = 2000 * 0.01 = 20 N up.
    force = obs[OBS_LAYOUT["tcp_force"]]
    assert force[2] == pytest.approx(20.0, abs=1.0) and np.all(np.abs(force[:2]) < 2.0)
    assert info["peak_force_n"][2] <= info["force_bound_n"][2]


def test_slamming_the_peg_down_breaks_the_bound_and_forbids_success():
    env = PandaPegInsertEnv()
    obs, info = press_beside_the_hole(env, down_action=1.0)  # 2 cm per step, full speed into the board
    assert not info["force_ok"] and info["peak_force_n"][2] > info["force_bound_n"][2]
    # Inserting afterwards no longer counts: the episode's peak stays above the bound.
    expert = envs.make_expert("peg-insert", noise_std=0.0, seed=0)
    for _ in range(40):
        obs, _, terminated, _, info = env.step(expert(obs))
        assert not terminated
    assert info["insert_depth_m"] >= env.config.insert_depth_m and not info["is_success"]


def test_raw_force_check_is_stricter_than_the_filtered_one():
    raw = PandaPegInsertEnv(PandaPegInsertConfig(force_filter_time_constant_s=0.0))
    filtered = PandaPegInsertEnv()
    _, info_raw = press_beside_the_hole(raw, down_action=0.5)
    _, info_filtered = press_beside_the_hole(filtered, down_action=0.5)
    assert info_raw["peak_force_n"][2] > info_filtered["peak_force_n"][2]


def test_success_reports_depth_and_peak_force():
    env = envs.make("peg-insert")
    expert = envs.make_expert("peg-insert", noise_std=0.0, seed=0)
    obs, _ = env.reset(seed=4)
    for _ in range(100):
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    assert terminated and reward == 1.0 and info["force_ok"]
    assert info["insert_depth_m"] >= 0.02 and info["peak_force_n"].shape == (3,)


def test_config_checks():
    with pytest.raises(ValueError, match="insert_depth_m"):
        PandaPegInsertConfig(insert_depth_m=0.05)
    with pytest.raises(ValueError, match="force_tolerance_n"):
        PandaPegInsertConfig(force_tolerance_n=-1.0)
    assert dataclasses.replace(PandaPegInsertConfig(), action_scale_m=0.01).controller.position_error_clip_m == (
        0.003,
        0.003,
        0.01,
    )
