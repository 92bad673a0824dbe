"""Emulated Robotiq 2F gripper answering Modbus RTU (FC03/FC04 reads, FC16 writes).

State machine, from the manual's register description: rACT 0 resets; a rising edge of rACT
starts activation (gSTA 1 -> 3); with rGTO = 1 the fingers move toward rPR at a rate set by rSP;
they stop on an object (gOBJ 2 closing, 1 opening) or at the target (gOBJ 3); 1 s without traffic
latches gFLT 9 and stops the fingers; rGTO before activation gives gFLT 7 (5 while activating).
Major faults (injected) need a new rACT rising edge.

Emulator assumptions (not manual facts): activation takes `activation_time_s` (short by default,
so tests are fast) and ends with the fingers open; a stroke at speed 255 takes
`fastest_stroke_s`; gFLT 9 clears on the next command write; gCU while holding an object is
proportional to rFR.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from hardware.errors import ChecksumError, FrameError
from hardware.robotiq import modbus_rtu
from hardware.robotiq.modbus_rtu import ExceptionCode, Frame, FrameParser, FunctionCode, Role
from hardware.robotiq.registers import (
    BANK_REGISTERS,
    COMM_WATCHDOG_S,
    DEFAULT_SLAVE_ID,
    INPUT_ADDRESS,
    OUTPUT_ADDRESS,
    R_ACT,
    R_GTO,
    ActivationStatus,
    GripperCommand,
    GripperFault,
    GripperStatus,
    ObjectStatus,
)


@dataclass
class GripperDynamics:
    activation_time_s: float = 0.05
    fastest_stroke_s: float = 0.2  # full 0..255 stroke at rSP 255
    slowest_stroke_s: float = 2.0  # at rSP 0
    holding_current_a_at_full_force: float = 0.6
    moving_current_a: float = 0.2
    comm_watchdog_s: float = COMM_WATCHDOG_S  # the device's; tests shorten it to stay fast


class Robotiq2FEmulator:
    """One gripper on a Modbus line. Knobs: `object_position`, `opening_obstacle_position`,
    `inject_fault()`; all state access from tests under `with emulator.lock:`."""

    def __init__(self, slave_id: int = DEFAULT_SLAVE_ID, dynamics: GripperDynamics | None = None,
                 now_s: float | None = None) -> None:
        self.slave_id = slave_id
        self.dynamics = dynamics or GripperDynamics()
        self.lock = threading.RLock()
        self.parser = FrameParser(Role.REQUEST)
        self.output = bytearray(6)  # robot-output bank as last written
        self.activation = ActivationStatus.RESET
        self.position = 0.0
        self.object = ObjectStatus.MOVING
        self.fault = GripperFault.NONE
        self.object_position: int | None = None  # an object between the fingers stops closing here
        self.opening_obstacle_position: int | None = None  # something outside stops opening here
        self.bad_requests = 0
        self._activation_done_s = 0.0
        self._last_update_s: float | None = now_s
        self._last_comm_s: float | None = now_s

    # ---- knobs ---------------------------------------------------------------------------------
    def inject_fault(self, fault: GripperFault) -> None:
        """Latch a fault (e.g. OVERCURRENT); major ones stop motion until re-activation."""
        self.fault = fault

    @property
    def command(self) -> GripperCommand:
        return GripperCommand.from_bytes(bytes(self.output))

    def status(self) -> GripperStatus:
        cmd = self.command
        moving = self.object is ObjectStatus.MOVING and self._motion_allowed()
        if self.object in (ObjectStatus.CONTACT_CLOSING, ObjectStatus.CONTACT_OPENING):
            current = self.dynamics.holding_current_a_at_full_force * cmd.force / 255
        else:
            current = self.dynamics.moving_current_a if moving and cmd.go_to else 0.0
        return GripperStatus(
            activated=cmd.activate,
            go_to=cmd.go_to,
            activation=self.activation,
            object=self.object if cmd.go_to else ObjectStatus.MOVING,
            fault=self.fault,
            controller_fault=0,
            position_request=cmd.position,
            position=round(self.position),
            current_a=current,
        )

    # ---- time ----------------------------------------------------------------------------------
    def _motion_allowed(self) -> bool:
        return (
            self.activation is ActivationStatus.ACTIVATED
            and not self.fault.is_major
            and self.fault is not GripperFault.NO_COMMUNICATION
        )

    def advance(self, now_s: float) -> None:
        if self._last_update_s is None:
            self._last_update_s = self._last_comm_s = now_s
        window_s = self.dynamics.comm_watchdog_s
        if (self._last_comm_s is not None and now_s - self._last_comm_s >= window_s
                and self.activation is ActivationStatus.ACTIVATED and not self.fault.is_major):
            self._move(self._last_comm_s + window_s - self._last_update_s)
            self._last_update_s = max(self._last_update_s, self._last_comm_s + window_s)
            self.fault = GripperFault.NO_COMMUNICATION
        if self.activation is ActivationStatus.ACTIVATING and now_s >= self._activation_done_s:
            self.activation = ActivationStatus.ACTIVATED
            self.position = 0.0
            if self.fault is GripperFault.ACTION_DELAYED:  # the delayed action now runs
                self.fault = GripperFault.NONE
            self._last_update_s = max(self._last_update_s, self._activation_done_s)
        self._move(now_s - self._last_update_s)
        self._last_update_s = max(self._last_update_s, now_s)

    def _move(self, dt_s: float) -> None:
        cmd = self.command
        if dt_s <= 0 or not cmd.go_to or not self._motion_allowed() or self.object is not ObjectStatus.MOVING:
            return
        d = self.dynamics
        stroke_s = d.slowest_stroke_s + (d.fastest_stroke_s - d.slowest_stroke_s) * cmd.speed / 255
        rate = 255 / stroke_s
        target = float(cmd.position)
        stop, contact = target, ObjectStatus.AT_POSITION
        closing_onto_object = self.object_position is not None and self.position <= self.object_position < target
        if closing_onto_object:
            stop, contact = float(self.object_position), ObjectStatus.CONTACT_CLOSING
        if (target < self.position and self.opening_obstacle_position is not None
                and target < self.opening_obstacle_position <= self.position):
            stop, contact = float(self.opening_obstacle_position), ObjectStatus.CONTACT_OPENING
        step = rate * dt_s
        if abs(stop - self.position) <= step:
            self.position = stop
            self.object = contact
        else:
            self.position += step if stop > self.position else -step

    # ---- protocol ------------------------------------------------------------------------------
    def receive(self, data: bytes, now_s: float) -> list[bytes]:
        with self.lock:
            self.parser.feed(data)
            replies = []
            while True:
                try:
                    frame = self.parser.next_packet()
                except (ChecksumError, FrameError):
                    self.bad_requests += 1  # Modbus: no reply to a corrupt frame
                    continue
                if frame is None:
                    return replies
                if frame.slave not in (self.slave_id, 0):
                    continue
                self.advance(now_s)
                self._last_comm_s = now_s
                reply = self._execute(frame, now_s)
                if frame.slave == self.slave_id and reply is not None:
                    replies.append(reply)

    def _execute(self, frame: Frame, now_s: float) -> bytes | None:
        function = frame.function
        if function in (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS):
            address, count = frame.address_count()
            if not 1 <= count <= BANK_REGISTERS:
                return modbus_rtu.exception_response(self.slave_id, function, ExceptionCode.ILLEGAL_DATA_VALUE)
            if address == INPUT_ADDRESS:
                bank = self.status().to_bytes()
            elif address == OUTPUT_ADDRESS:
                bank = bytes(self.output)
            else:
                return modbus_rtu.exception_response(self.slave_id, function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
            return modbus_rtu.read_registers_response(self.slave_id, function, bank[: 2 * count])
        if function == FunctionCode.WRITE_MULTIPLE_REGISTERS:
            try:
                address, count = frame.address_count()
                payload = frame.write_payload()
            except FrameError:
                return modbus_rtu.exception_response(self.slave_id, function, ExceptionCode.ILLEGAL_DATA_VALUE)
            if address != OUTPUT_ADDRESS or count > BANK_REGISTERS:
                return modbus_rtu.exception_response(self.slave_id, function, ExceptionCode.ILLEGAL_DATA_ADDRESS)
            self._write_output(payload, now_s)
            return modbus_rtu.write_registers_response(self.slave_id, address, count)
        return modbus_rtu.exception_response(self.slave_id, function, ExceptionCode.ILLEGAL_FUNCTION)

    def _write_output(self, payload: bytes, now_s: float) -> None:
        was_active = bool(self.output[0] & R_ACT)
        self.output[: len(payload)] = payload
        action = self.output[0]
        if self.fault is GripperFault.NO_COMMUNICATION:
            self.fault = GripperFault.NONE
        if not action & R_ACT:
            self.activation = ActivationStatus.RESET
            self.object = ObjectStatus.MOVING
            if self.fault.is_major or self.fault in (GripperFault.ACTIVATION_BIT_NOT_SET, GripperFault.ACTION_DELAYED):
                self.fault = GripperFault.NONE
            if action & R_GTO:
                self.fault = GripperFault.ACTIVATION_BIT_NOT_SET
            return
        if not was_active:
            self.activation = ActivationStatus.ACTIVATING
            self._activation_done_s = now_s + self.dynamics.activation_time_s
            self.fault = GripperFault.NONE
            self.object = ObjectStatus.MOVING
        if action & R_GTO:
            if self.activation is ActivationStatus.ACTIVATING:
                self.fault = GripperFault.ACTION_DELAYED
            else:
                # Re-evaluate motion: the next advance settles at once if already at target or on an object.
                self.object = ObjectStatus.MOVING
