"""Fixtures: real drivers connected to emulators over a pty or a TCP socket (both, parametrized)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import pytest

from hardware.dynamixel import DynamixelBus
from hardware.dynamixel import Model as DxlModel
from hardware.emulators import EmulatorServer, FaultConfig, Transport
from hardware.emulators.dynamixel import DynamixelBusEmulator
from hardware.emulators.feetech import FeetechBusEmulator
from hardware.feetech import FeetechBus
from hardware.feetech import Model as FtsModel
from hardware.motor_bus import Motor, MotorBusConfig

# Emulators answer in well under a millisecond, but the CI machine is shared: a generous timeout
# keeps exact-traffic assertions free of spurious retries. Tests that inject silence pass
# SILENCE_TIMEOUT_S, since each silent reply costs one timeout.
TIMEOUT_S = 0.25
SILENCE_TIMEOUT_S = 0.05

ARM = {
    "shoulder": Motor(1, DxlModel.XM430_W350),
    "elbow": Motor(2, DxlModel.XM430_W350),
    "wrist": Motor(3, DxlModel.XL330_M288),
    "base": Motor(4, DxlModel.XL430_W250),
}


@pytest.fixture(params=[Transport.PTY, Transport.TCP], ids=["pty", "tcp"])
def transport(request) -> Transport:
    return request.param


@contextlib.contextmanager
def dynamixel_rig(
    transport: Transport = Transport.PTY,
    motors: dict[str, Motor] | None = None,
    faults: FaultConfig | None = None,
    emulated: dict[int, DxlModel] | None = None,
    **config,
) -> Iterator[tuple[DynamixelBus, DynamixelBusEmulator, EmulatorServer]]:
    """A connected DynamixelBus over an emulator; `emulated` overrides which servos exist."""
    motors = motors or ARM
    device = DynamixelBusEmulator.with_models(emulated or {m.id: m.model for m in motors.values()})
    with EmulatorServer(device, transport, faults) as server:
        config.setdefault("timeout_s", TIMEOUT_S)
        bus = DynamixelBus(MotorBusConfig(server.url, motors, **config))
        bus.connect()
        try:
            yield bus, device, server
        finally:
            bus.disconnect(disable_torque=False)


@contextlib.contextmanager
def feetech_rig(
    transport: Transport = Transport.PTY,
    motors: dict[str, Motor] | None = None,
    faults: FaultConfig | None = None,
    **config,
) -> Iterator[tuple[FeetechBus, FeetechBusEmulator, EmulatorServer]]:
    motors = motors or {"a": Motor(1, FtsModel.STS3215), "b": Motor(2, FtsModel.STS3215)}
    device = FeetechBusEmulator.with_models({m.id: m.model for m in motors.values()})
    with EmulatorServer(device, transport, faults) as server:
        config.setdefault("timeout_s", TIMEOUT_S)
        bus = FeetechBus(MotorBusConfig(server.url, motors, **config))
        bus.connect()
        try:
            yield bus, device, server
        finally:
            bus.disconnect(disable_torque=False)


def wait_for(condition: Callable[[], bool], timeout_s: float = 2.0, period_s: float = 0.01) -> bool:
    """Poll `condition` (emulated motion takes real time); True once it holds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(period_s)
    return condition()
