"""Robotiq 2F-85/2F-140 gripper over Modbus RTU: activate, move with speed and force, status.

The gripper faults (gFLT 9) after 1 s without Modbus traffic. A daemon thread reads the status
whenever the port has been idle for `keepalive_period_s`, so a policy that pauses (an evaluation,
a long reset) does not trip it. All port access is serialised by one lock; the keep-alive only
talks when nobody else has.

Example:
    with Robotiq2F(Robotiq2FConfig(port="/dev/ttyUSB1")) as gripper:  # connects and activates
        gripper.move(255, speed=128, force=50)
        status = gripper.wait_until_stopped()
        holding = status.object_detected  # fingers stopped on something
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import serial

from hardware.errors import (
    CommunicationError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    DeviceStatusError,
    FrameError,
    GripperFaultError,
    ProtocolError,
    ReplyTimeoutError,
)
from hardware.robotiq import modbus_rtu
from hardware.robotiq.modbus_rtu import ExceptionCode, FrameParser, FunctionCode, Role
from hardware.robotiq.registers import (
    BANK_BYTES,
    BANK_REGISTERS,
    COMM_WATCHDOG_S,
    DEFAULT_BAUDRATE,
    DEFAULT_SLAVE_ID,
    INPUT_ADDRESS,
    OUTPUT_ADDRESS,
    ActivationStatus,
    GripperCommand,
    GripperFault,
    GripperStatus,
    ObjectStatus,
)
from hardware.serial_port import close_quietly, open_port, read_some, wire_time_s

logger = logging.getLogger(__name__)


@dataclass
class Robotiq2FConfig:
    """Args:
    port: pyserial url or device path (RS-485 adapter, emulator pty path, `socket://host:port`).
    slave_id: Modbus slave id (9 from the factory).
    timeout_s: wait for a reply before counting a fault.
    retries: extra attempts after a fault (timeout, CRC, framing).
    keepalive_period_s: idle time after which the keep-alive thread reads the status; must stay
        well under the gripper's 1 s watchdog. None disables the thread (then call `status()`
        yourself at least once a second).
    activation_timeout_s: how long `activate()` waits for gSTA = activated (a real 2F takes ~2 s).
    poll_period_s: status polling period of `activate()` and `wait_until_stopped()`.
    """

    port: str
    slave_id: int = DEFAULT_SLAVE_ID
    baudrate: int = DEFAULT_BAUDRATE
    timeout_s: float = 0.2
    retries: int = 2
    keepalive_period_s: float | None = 0.25
    activation_timeout_s: float = 5.0
    poll_period_s: float = 0.01

    def __post_init__(self) -> None:
        if self.keepalive_period_s is not None and not 0 < self.keepalive_period_s < COMM_WATCHDOG_S / 2:
            raise ValueError(
                f"keepalive_period_s must be in (0, {COMM_WATCHDOG_S / 2}) s so traffic beats the gripper's "
                f"{COMM_WATCHDOG_S} s watchdog, got {self.keepalive_period_s}"
            )
        if self.timeout_s <= 0 or self.retries < 0:
            raise ValueError(f"timeout_s must be > 0 and retries >= 0, got {self.timeout_s}, {self.retries}")


def _byte(name: str, value: float) -> int:
    """Clip a 0..255 command field; NaN is an error, not a silent zero."""
    if value != value:
        raise ValueError(f"gripper {name} is NaN; expected a number in 0..255")
    return int(min(max(round(value), 0), 255))


class Robotiq2F:
    def __init__(self, config: Robotiq2FConfig) -> None:
        self.config = config
        self._port: serial.SerialBase | None = None
        self._io_lock = threading.Lock()
        self._last_io_s = 0.0
        self._stop = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._keepalive_error: Exception | None = None
        self.last_status: GripperStatus | None = None
        self.last_command: GripperCommand | None = None
        self.keepalive_reads = 0

    def __repr__(self) -> str:
        return f"Robotiq2F({self.config.port!r}, slave {self.config.slave_id})"

    # ---- connection ----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._port is not None and self._port.is_open

    def connect(self, activate: bool = True) -> None:
        """Open the port, start the keep-alive, and (by default) activate the gripper."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(repr(self))
        self._port = open_port(self.config.port, self.config.baudrate, self.config.timeout_s)
        self._keepalive_error = None
        try:
            self.status()
            if self.config.keepalive_period_s is not None:
                self._stop.clear()
                self._keepalive = threading.Thread(target=self._keepalive_loop, name="robotiq-keepalive",
                                                   daemon=True)
                self._keepalive.start()
            if activate:
                self.activate()
        except Exception:
            self.disconnect()
            raise

    def disconnect(self) -> None:
        """Stop the keep-alive and close the port. The gripper keeps its grip (no command is sent)."""
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(timeout=2.0)
            self._keepalive = None
        with self._io_lock:
            close_quietly(self._port)
            self._port = None

    def __enter__(self) -> Robotiq2F:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def _keepalive_loop(self) -> None:
        period = self.config.keepalive_period_s or COMM_WATCHDOG_S / 4
        while not self._stop.wait(period / 4):
            if time.monotonic() - self._last_io_s < period:
                continue
            try:
                self.status()
                self.keepalive_reads += 1
            except Exception as exc:  # surfaced to the caller on its next call, never dropped
                logger.warning("robotiq keep-alive failed: %s", exc)
                self._keepalive_error = exc

    # ---- transactions --------------------------------------------------------------------------
    def _transact(self, request: bytes, reply_size: int, what: str) -> modbus_rtu.Frame:
        if self._keepalive_error is not None and threading.current_thread() is not self._keepalive:
            error, self._keepalive_error = self._keepalive_error, None
            raise CommunicationError(repr(self), "keep-alive status read", 1, error) from error
        attempts = self.config.retries + 1
        last_fault: Exception | None = None
        with self._io_lock:
            port = self._port
            if port is None:
                raise DeviceNotConnectedError(repr(self))
            for _ in range(attempts):
                try:
                    port.reset_input_buffer()
                    port.write(request)
                    self._last_io_s = time.monotonic()
                    frame = self._receive(port, request[1], reply_size)
                except ProtocolError as exc:
                    last_fault = exc
                    continue
                except (serial.SerialException, OSError) as exc:
                    raise CommunicationError(repr(self), what, 1, exc) from exc
                if frame.is_exception:
                    try:
                        code = ExceptionCode(frame.exception_code).name
                    except ValueError:
                        code = f"exception {frame.exception_code}"
                    raise DeviceStatusError(repr(self), what, code,
                                            "Check the register address and count against the manual.")
                return frame
        raise CommunicationError(repr(self), what, attempts, last_fault)

    def _receive(self, port: serial.SerialBase, function: int, reply_size: int) -> modbus_rtu.Frame:
        parser = FrameParser(Role.RESPONSE, self.config.slave_id)
        deadline = time.perf_counter() + self.config.timeout_s + wire_time_s(reply_size, self.config.baudrate)
        while True:
            # An exception reply is 5 bytes: never ask for more than the frame in progress needs.
            chunk = read_some(port, parser.needed(modbus_rtu.EXCEPTION_RESPONSE_SIZE))
            if not chunk:
                raise ReplyTimeoutError([self.config.slave_id], self.config.timeout_s)
            parser.feed(chunk)
            while (frame := parser.next_packet()) is not None:
                if frame.function & 0x7F == function:
                    return frame
            if time.perf_counter() > deadline:
                raise ReplyTimeoutError([self.config.slave_id], self.config.timeout_s)

    def _write_command(self, command: GripperCommand) -> GripperCommand:
        request = modbus_rtu.write_registers_request(self.config.slave_id, OUTPUT_ADDRESS, command.to_bytes())
        frame = self._transact(request, modbus_rtu.WRITE_RESPONSE_SIZE, "WRITE robot output")
        if frame.address_count() != (OUTPUT_ADDRESS, BANK_REGISTERS):
            raise FrameError(f"FC16 echo {frame.address_count()} does not match the request")
        self.last_command = command
        return command

    # ---- public API ----------------------------------------------------------------------------
    def status(self) -> GripperStatus:
        """Read the robot-input bank (also what keeps the gripper's watchdog fed)."""
        request = modbus_rtu.read_registers_request(
            self.config.slave_id, INPUT_ADDRESS, BANK_REGISTERS, FunctionCode.READ_HOLDING_REGISTERS
        )
        frame = self._transact(request, modbus_rtu.read_response_size(BANK_REGISTERS), "READ robot input")
        payload = frame.read_payload()
        if len(payload) != BANK_BYTES:
            raise FrameError(f"status read returned {len(payload)} bytes, expected {BANK_BYTES}")
        self.last_status = GripperStatus.from_bytes(payload)
        return self.last_status

    def activate(self, timeout_s: float | None = None) -> GripperStatus:
        """Reset (rACT = 0) then activate (rACT = 1) and wait until gSTA reports activated.

        Also the recovery from major faults, which need this rising edge of rACT.
        """
        timeout_s = self.config.activation_timeout_s if timeout_s is None else timeout_s
        self._write_command(GripperCommand(activate=False, go_to=False, position=0, speed=0, force=0))
        self._write_command(GripperCommand(activate=True, go_to=False, position=0, speed=0, force=0))
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status.fault.is_major:
                raise GripperFaultError(f"{self!r} activation failed with fault {status.fault.name}")
            if status.activation is ActivationStatus.ACTIVATED:
                return status
            if time.monotonic() > deadline:
                raise GripperFaultError(
                    f"{self!r} not activated after {timeout_s} s (gSTA {status.activation.name}); check "
                    "that nothing blocks the fingers and that the gripper is powered (24 V)"
                )
            time.sleep(self.config.poll_period_s)

    def move(self, position: float, speed: float = 255, force: float = 255) -> GripperCommand:
        """Go to `position` (0 open .. 255 closed) with `speed` and `force` (0..255, clipped).

        Returns the command actually sent. Raises if the gripper is not activated or has a major fault.
        """
        status = self.last_status
        if status is None or status.activation is not ActivationStatus.ACTIVATED:
            raise GripperFaultError(f"{self!r} is not activated. Call `.activate()` first.")
        if status.fault.is_major:
            raise GripperFaultError(f"{self!r} has fault {status.fault.name}. Call `.activate()` to clear it.")
        command = GripperCommand(True, True, _byte("position", position), _byte("speed", speed),
                                 _byte("force", force))
        return self._write_command(command)

    def open(self, speed: float = 255, force: float = 255) -> GripperCommand:
        return self.move(0, speed, force)

    def close(self, speed: float = 255, force: float = 255) -> GripperCommand:
        return self.move(255, speed, force)

    def send_action(self, closure: float, speed: float = 255, force: float = 255) -> float:
        """Closure in [0, 1] (0 open, 1 closed), clipped; returns the closure actually sent."""
        if closure != closure:
            raise ValueError("gripper closure is NaN; expected a number in [0, 1]")
        command = self.move(min(max(closure, 0.0), 1.0) * 255, speed, force)
        return command.position / 255

    def wait_until_stopped(self, timeout_s: float = 5.0) -> GripperStatus:
        """Poll until the fingers stop (at the target or on an object); raises on timeout or fault."""
        deadline = time.monotonic() + timeout_s
        requested = self.last_command.position if self.last_command else None
        while True:
            status = self.status()
            if status.fault.is_major or status.fault is GripperFault.NO_COMMUNICATION:
                raise GripperFaultError(f"{self!r} stopped with fault {status.fault.name}")
            # gPR must echo our request first, or a stop from the previous command would count.
            acknowledged = requested is None or status.position_request == requested
            if acknowledged and status.object is not ObjectStatus.MOVING:
                return status
            if time.monotonic() > deadline:
                raise GripperFaultError(f"{self!r} still moving after {timeout_s} s (position {status.position})")
            time.sleep(self.config.poll_period_s)
