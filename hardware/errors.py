"""Typed errors of the hardware layer; each message says what went wrong and how to fix it.

Two families matter to callers:
- `ProtocolError` (bad bytes: checksum, framing, no reply) is what parsers raise and what the buses
  retry on. Fuzzed parsers may raise nothing else.
- `HardwareError` subclasses are what a bus raises to its caller once retrying cannot help.
"""

from __future__ import annotations


class HardwareError(Exception):
    """Base of every error raised by `hardware`."""


class DeviceNotConnectedError(HardwareError):
    def __init__(self, device: str) -> None:
        super().__init__(f"{device} is not connected. Run `.connect()` first, or use a `with` block.")


class DeviceAlreadyConnectedError(HardwareError):
    def __init__(self, device: str) -> None:
        super().__init__(f"{device} is already connected. Call `.disconnect()` before connecting again.")


class PortOpenError(HardwareError):
    """The serial port (or socket/pty behind a pyserial url) could not be opened."""


class ProtocolError(HardwareError):
    """Bytes on the wire that do not form a valid reply. Buses retry these."""


class ChecksumError(ProtocolError):
    def __init__(self, protocol: str, device_id: int | None, expected: int, received: int) -> None:
        self.device_id = device_id
        self.expected = expected
        self.received = received
        super().__init__(
            f"{protocol} frame from id {device_id} has checksum 0x{received:04X}, expected 0x{expected:04X} "
            "(line noise, wrong baud rate or two devices answering at once)"
        )


class FrameError(ProtocolError):
    """A header was found but what follows cannot be a frame (bad length, truncated, unknown layout)."""


class ReplyTimeoutError(ProtocolError):
    def __init__(self, device_ids: list[int], timeout_s: float) -> None:
        self.device_ids = device_ids
        super().__init__(f"no complete reply from id(s) {device_ids} within {timeout_s * 1e3:.1f} ms")


class CommunicationError(HardwareError):
    """Retries are exhausted; names the motor, the instruction, the attempts and the last fault."""

    def __init__(self, device: str, instruction: str, attempts: int, last_fault: Exception | None) -> None:
        self.device = device
        self.instruction = instruction
        self.attempts = attempts
        self.last_fault = last_fault
        super().__init__(
            f"no valid reply from {device} to {instruction} after {attempts} attempt(s); "
            f"last fault: {type(last_fault).__name__}: {last_fault}. "
            "Check power, cabling, baud rate and id, or raise `retries`/`timeout_s` in the bus config."
        )


class DeviceStatusError(HardwareError):
    """The device answered, but reported that it could not execute the instruction (not retried)."""

    def __init__(self, device: str, instruction: str, error: str, fix: str) -> None:
        self.device = device
        self.instruction = instruction
        self.error = error
        super().__init__(f"{device} rejected {instruction}: {error}. {fix}")


class DeviceAlertError(HardwareError):
    """The device flags a hardware fault (overload, overheating, voltage...); it needs attention."""

    def __init__(self, device: str, faults: list[str], fix: str) -> None:
        self.device = device
        self.faults = faults
        super().__init__(f"{device} reports hardware fault(s) {faults}. {fix}")


class ModelMismatchError(HardwareError):
    """The device at an id is not the model the configuration names."""


class WatchdogTrippedError(HardwareError):
    """A device-side communication watchdog stopped the device."""


class GripperFaultError(HardwareError):
    """The gripper reports a fault that blocks the requested action."""
