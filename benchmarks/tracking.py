"""Step and circle tracking errors of each control law and gain set on the simulated Panda.

- step: 5 cm along world x from the pick-cube home pose, target filter off (the law's own response);
  overshoot, 10-90 % rise, 2 % settling time, final error after 1.5 s.
- circle: radius 5 cm in the horizontal plane, period 2 s (0.157 m/s), orientation held, targets streamed
  every tick with the target filter off; RMS / max position [mm] and orientation [deg] errors over the
  second lap. The joint law follows the same path through inverse kinematics.

Every row runs at 500 Hz (the env's rate); the default gain set of each law also at 1 kHz. The peer of
each row is the prediction of a linear model where one exists (operational space: the unit oscillator's
response; impedance laws: the damper's lag D v / K), printed beside the measurement.

    python -m benchmarks.tracking        # writes benchmarks/results/tracking.json
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from benchmarks.common import write_result
from benchmarks.controller_cost import ARM_JOINTS, TCP_SITE, make_sim_arm
from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
from controllers.evaluation import circle, inverse_kinematics, step_response, tracking_errors
from controllers.joint_impedance import JointImpedanceConfig, JointImpedanceController
from controllers.operational_space import OperationalSpaceConfig, OperationalSpaceController

RADIUS_M, PERIOD_S, STEP_M = 0.05, 2.0, 0.05
OMEGA = 2.0 * math.pi / PERIOD_S

# (law, gain set, config); the first set of each law is its default.
ROWS = (
    ("cartesian_impedance", "serl (2000/150, clip 1 cm)", CartesianImpedanceConfig()),
    (
        "cartesian_impedance",
        "precision (3000/300, clip 10 cm)",
        CartesianImpedanceConfig(
            translational_stiffness_n_per_m=3000.0,
            rotational_stiffness_nm_per_rad=300.0,
            position_error_clip_m=(0.1,) * 3,
            orientation_error_clip_rad=(0.5,) * 3,
        ),
    ),
    (
        "cartesian_impedance",
        "serl + integral 2/s, kept across targets",
        CartesianImpedanceConfig(integral_gain_per_s=2.0, reset_integral_on_target=False),
    ),
    ("operational_space", "kp 200", OperationalSpaceConfig()),
    ("operational_space", "kp 400", OperationalSpaceConfig(position_gain_per_s2=400.0, orientation_gain_per_s2=400.0)),
    ("operational_space", "kp 200 decoupled", OperationalSpaceConfig(decoupled=True)),
    ("joint_impedance", "deoxys (100..150)", JointImpedanceConfig()),
    (
        "joint_impedance",
        "stiff (4x deoxys)",
        JointImpedanceConfig(stiffness_nm_per_rad=tuple(4 * k for k in JointImpedanceConfig().stiffness_nm_per_rad)),
    ),
)
CLASSES = {
    "cartesian_impedance": CartesianImpedanceController,
    "operational_space": OperationalSpaceController,
    "joint_impedance": JointImpedanceController,
}


def predicted_circle_rms_mm(law: str, config) -> float | None:
    """Linear-model lag on the circle: unit oscillator (operational space) or damper lag D v / K (impedance)."""
    if law == "operational_space" and not config.decoupled:
        kp = config.position_gain_per_s2
        kd = 2.0 * config.damping_ratio * math.sqrt(kp)
        return RADIUS_M * 1e3 * abs(complex(-(OMEGA**2), kd * OMEGA)) / abs(complex(kp - OMEGA**2, kd * OMEGA))
    if law == "cartesian_impedance":
        k = config.translational_stiffness_n_per_m
        d = 2.0 * config.damping_ratio * math.sqrt(k)
        return RADIUS_M * 1e3 * d * OMEGA / abs(complex(k, d * OMEGA))
    if law == "joint_impedance":
        # Each joint lags by D dq / K = 2 zeta dq / sqrt(K); K of joint 1 stands for the joints that carry the path.
        return 2.0 * config.damping_ratio * RADIUS_M * OMEGA / math.sqrt(config.stiffness_nm_per_rad[0]) * 1e3
    return None


def run_row(law: str, config, dt_s: float) -> dict:
    config = _unfiltered(config)
    model, data, robot = make_sim_arm(dt_s)
    start, quat = robot.site_pos_world.copy(), robot.site_quat_world().copy()
    ctrl = data.ctrl[:7]

    def simulate(controller, n_ticks, target_at):
        pos, quats = np.zeros((n_ticks, 3)), np.zeros((n_ticks, 4))
        times = np.zeros(n_ticks)
        for i in range(n_ticks):
            mujoco.mj_step1(model, data)
            times[i] = data.time
            pos[i] = robot.site_pos_world
            robot.site_quat_world(quats[i])
            target_at(controller, i)
            ctrl[:] = controller.compute()
            mujoco.mj_step2(model, data)
        return times, pos, quats

    is_joint = law == "joint_impedance"
    # Step.
    controller = CLASSES[law](robot, config, dt_s)
    controller.reset()
    goal = start + [STEP_M, 0.0, 0.0]
    if is_joint:
        q_goal = inverse_kinematics(model, TCP_SITE, ARM_JOINTS, goal[None], quat[None], robot.q, iterations=30)[0]
        controller.set_target(q_goal)
    else:
        controller.set_target(goal, quat)
    times, pos, _ = simulate(controller, round(1.5 / dt_s), lambda c, i: None)
    step = step_response(times, pos, start, goal)

    # Circle, from home again.
    model, data, robot = make_sim_arm(dt_s)
    ctrl = data.ctrl[:7]
    controller = CLASSES[law](robot, config, dt_s)
    controller.reset()
    n = round(2 * PERIOD_S / dt_s)
    path = circle(np.arange(n) * dt_s, start, RADIUS_M, PERIOD_S)
    quat_path = np.tile(quat, (n, 1))
    if is_joint:
        q_path = inverse_kinematics(model, TCP_SITE, ARM_JOINTS, path, quat_path, robot.q)
        _, pos, quats = simulate(controller, n, lambda c, i: c.set_target(q_path[i]))
    else:
        _, pos, quats = simulate(controller, n, lambda c, i: c.set_target(path[i], quat))
    half = n // 2  # second lap; the pose sampled at tick i answers the target of tick i - 1
    errors = tracking_errors(pos[half:], quats[half:], path[half - 1 : -1], quat_path[half:])
    predicted = predicted_circle_rms_mm(law, config)
    return {
        "law": law,
        "rate_hz": round(1.0 / dt_s),
        "step": {k: _round(v) for k, v in step.as_dict().items()},
        "circle": {k: _round(v) for k, v in errors.as_dict().items()},
        "circle_predicted_rms_mm": None if predicted is None else round(predicted, 2),
    }


def _unfiltered(config):
    import dataclasses

    return dataclasses.replace(config, target_filter_time_constant_s=0.0)


def _round(value: float) -> float:
    return value if math.isinf(value) else round(value, 4)


def main() -> None:
    rows = {}
    seen = set()
    for law, gains, config in ROWS:
        rates = (0.002, 0.001) if law not in seen else (0.002,)
        seen.add(law)
        for dt_s in rates:
            result = run_row(law, config, dt_s)
            rows[f"{law} / {gains} / {result['rate_hz']} Hz"] = {"gains": gains, **result}

    print(
        f"{'law / gains / rate':66s} {'over%':>6s} {'settle s':>8s} {'rms mm':>7s} {'(pred)':>7s} "
        f"{'max mm':>7s} {'rms deg':>7s}"
    )
    for key, r in rows.items():
        step, circ = r["step"], r["circle"]
        predicted = "" if r["circle_predicted_rms_mm"] is None else f"{r['circle_predicted_rms_mm']:.1f}"
        print(
            f"{key:66s} {100 * step['overshoot_frac']:6.1f} {step['settling_time_s']:8.3f} "
            f"{circ['rms_pos_mm']:7.1f} {predicted:>7s} {circ['max_pos_mm']:7.1f} {circ['rms_rot_deg']:7.2f}"
        )
    worst = max(r["circle"]["rms_pos_mm"] for r in rows.values())
    print(f"worst circle RMS {worst:.1f} mm")
    write_result(
        "tracking",
        {"worst_rms_mm": round(worst, 2)},
        "python -m benchmarks.tracking",
        rows=rows,
        step_m=STEP_M,
        circle={"radius_m": RADIUS_M, "period_s": PERIOD_S, "speed_m_per_s": round(RADIUS_M * OMEGA, 4)},
        note="targets streamed every tick with the target filter off; no velocity feed-forward, so every law "
        "lags a moving target by its damping (see circle_predicted_rms_mm)",
    )


if __name__ == "__main__":
    main()
