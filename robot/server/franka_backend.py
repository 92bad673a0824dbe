"""The real-arm backend: a Franka in torque control (pylibfranka), a Robotiq gripper, OpenCV cameras.

The 1 kHz loop is the robot's: ``FrankaArm.run`` blocks in libfranka's read/write cycle on its own thread
and calls the same ``ImpedanceTorqueCallback`` that the twin calls. Loop timing is measured between
consecutive ticks (a Franka tick is due 1 ms after the previous one) and reported like the twin's.
``reset`` moves the tool along a straight line to the configured reset pose (SERL: 1.5 s) and re-arms a
stopped arm. Untested here: no pylibfranka and no arm on the development machines (the twin covers the
callback, the API and the env).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from envs.panda_base import ASSETS
from hardware.franka import CONTROL_PERIOD_S, FrankaArm, FrankaConfig, ImpedanceTorqueCallback, load_arm_model
from robot.server.config import RobotServerConfig

ROBOTIQ_STROKE_M = 0.085  # 2F-85 opening at position 0


class FrankaBackend:
    kind = "franka"

    def __init__(self, config: RobotServerConfig) -> None:
        self.config = config
        self.arm = FrankaArm(FrankaConfig(robot_ip=config.robot_ip, enforce_realtime=config.enforce_realtime))
        self.callback = ImpedanceTorqueCallback(load_arm_model(ASSETS / "panda.xml"), config.controller,
                                                config.watchdog)
        self.gripper = None
        self._emulator = None
        self._gripper_closed = False
        self.cameras: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_tick_ns = 0
        self._lateness_us = np.zeros(10_000)
        self._n_late = 0
        self.loop_error: BaseException | None = None

    def start(self) -> None:
        self.arm.connect()
        self._connect_gripper()
        self._connect_cameras()
        self._start_loop()

    def _connect_gripper(self) -> None:
        kind = self.config.gripper
        if kind == "none":
            return
        from hardware.robotiq.gripper import Robotiq2F, Robotiq2FConfig

        port = self.config.gripper_port
        if kind == "emulated":
            from hardware.emulators.robotiq import Robotiq2FEmulator
            from hardware.emulators.server import EmulatorServer, Transport

            self._emulator = EmulatorServer(Robotiq2FEmulator(), Transport.TCP)
            port = self._emulator.url
        self.gripper = Robotiq2F(Robotiq2FConfig(port=port))
        self.gripper.connect(activate=True)

    def _connect_cameras(self) -> None:
        from hardware.cameras.opencv import OpenCVCamera, OpenCVCameraConfig

        for name, entry in self.config.cameras.items():
            source: int | str = int(entry.source) if entry.source.isdigit() else entry.source
            camera = OpenCVCamera(OpenCVCameraConfig(
                source=source, width=entry.width or None, height=entry.height or None, fps=entry.fps or None,
                max_frame_age_s=entry.max_frame_age_s))
            camera.connect()
            self.cameras[name] = camera

    def _start_loop(self) -> None:
        self._stop.clear()
        self._last_tick_ns = 0
        self._thread = threading.Thread(target=self._run, name="franka-control", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.arm.run(self.callback, self._stop.is_set, self._on_tick)
        except BaseException as err:  # noqa: BLE001 (a reflex or a network error: reported through stats)
            self.loop_error = err

    def _on_tick(self, _now_s: float) -> None:
        now = time.perf_counter_ns()
        if self._last_tick_ns:
            late = (now - self._last_tick_ns) / 1e3 - CONTROL_PERIOD_S * 1e6
            self._lateness_us[self._n_late % len(self._lateness_us)] = late
            self._n_late += 1
        self._last_tick_ns = now

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        if self.gripper is not None:
            self.gripper.disconnect()
        if self._emulator is not None:
            self._emulator.close()
        for camera in self.cameras.values():
            camera.disconnect()

    def info(self) -> dict[str, Any]:
        return {"arm": "franka", "task": None, "rate_hz": 1000.0, "cameras": list(self.cameras),
                "has_gripper": self.gripper is not None, "gripper": self.config.gripper}

    # ------------------------------------------------------------------------------------ commands
    def set_target(self, pos: list[float], quat: list[float]) -> bool:
        return self.callback.set_target(pos, quat)

    def set_stiffness(self, stiffness: list[float]) -> bool:
        return self.callback.set_stiffness(stiffness)

    def set_gripper(self, closed: bool) -> None:
        if self.gripper is None:
            raise ValueError("this robot has no gripper (gripper.kind = 'none')")
        self._gripper_closed = bool(closed)
        self.gripper.close() if closed else self.gripper.open()

    def reset(self, seed: int | None, task: str | None = None,
              task_config: dict[str, Any] | None = None) -> dict[str, Any]:
        # The real scene is reset by a person or a script, not by a seed; a real arm has no task to
        # configure (the client computes rewards itself), so task and task_config are ignored.
        del seed, task, task_config
        if self.callback.finished or self._thread is None or not self._thread.is_alive():
            if self._thread is not None:
                self._stop.set()
                self._thread.join(2.0)
            self._start_loop()
            time.sleep(0.05)
        if self.gripper is not None:
            self.set_gripper(False)
        start = np.asarray(self.callback.read()["tcp_pos"])
        goal = np.asarray(self.config.reset_tcp_pos_m)
        steps = max(1, round(self.config.reset_duration_s / 0.01))
        for i in range(1, steps + 1):  # 100 Hz straight line; keeps the watchdog fed
            self.callback.set_target(start + (goal - start) * i / steps, self.config.reset_tcp_quat)
            time.sleep(0.01)
        return self.state()

    # ------------------------------------------------------------------------------------ readings
    def state(self) -> dict[str, Any]:
        arm = self.callback.read()
        width = 0.0
        if self.gripper is not None:
            status = self.gripper.last_status
            width = ROBOTIQ_STROKE_M * (1.0 - status.position / 255) if status is not None else 0.0
        return {**arm, "gripper_width": width, "gripper_closed": self._gripper_closed}

    def frames(self, names: list[str], size: tuple[int, int]) -> list[tuple[str, np.ndarray, float]]:
        import cv2

        unknown = [n for n in names if n not in self.cameras]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; this robot has {list(self.cameras)}")
        out = []
        for name in names:
            frame = self.cameras[name].read_latest()
            image = frame.image
            if image.shape[:2] != tuple(size):
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
            out.append((name, image, frame.timestamp_s))
        return out

    def stats(self) -> dict[str, Any]:
        n = min(self._n_late, len(self._lateness_us))
        late = self._lateness_us[:n]
        return {
            "rate_hz": 1000.0,
            "running": self._thread is not None and self._thread.is_alive(),
            "error": None if self.loop_error is None else f"{type(self.loop_error).__name__}: {self.loop_error}",
            "lost_packets": self.arm.lost_packets,
            "last": None if n == 0 else {"p50_lateness_us": float(np.percentile(late, 50)),
                                         "p99_lateness_us": float(np.percentile(late, 99)),
                                         "max_lateness_us": float(late.max()), "ticks": n},
            "ticks": self.callback.ticks,
            "targets": self.callback.targets,
        }
