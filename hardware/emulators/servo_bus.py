"""What every emulated servo bus shares: the servos on the line, their lock and the request parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, ClassVar, Self


class ServoBusEmulator:
    """Several emulated servos on one half-duplex line; subclasses answer their protocol in `receive`.

    Access servos through `servo(id)` inside `with emulator.lock:` while a server thread is running.
    """

    servo_cls: ClassVar[type]
    """The family's emulated servo, built as servo_cls(id, model, position_ticks, now_s=...)."""
    parser_cls: ClassVar[type]
    """The family's incremental packet parser."""

    def __init__(self, servos: Iterable[Any]) -> None:
        self._all_servos = list(servos)
        self.servos = {s.id: s for s in self._all_servos}
        self.lock = threading.RLock()
        self.parser = self.parser_cls()
        self.bad_requests = 0  # corrupt request frames seen

    @classmethod
    def with_models(cls, models: dict[int, Any], position_ticks: float = 2048.0) -> Self:
        now = time.monotonic()
        return cls(cls.servo_cls(i, m, position_ticks, now_s=now) for i, m in models.items())

    def servo(self, device_id: int) -> Any:
        return self.servos[device_id]
