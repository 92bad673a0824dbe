"""Cameras through OpenCV: a reader thread keeps only the newest frame, with its arrival time.

Why a thread: V4L2 queues 4 driver buffers (opencv#13145) and CAP_PROP_BUFFERSIZE is honoured by some
backends only (opencv#10671), so a loop that calls `read()` slower than the camera's fps gets frames
several periods old. Reading continuously into one slot gives the newest frame at any moment, and
memory does not grow however slowly the caller reads.

Settings are applied in the order FOURCC -> width/height -> FPS (some cameras reset the rate when the
size changes, lerobot PR #2275) and every one is read back. With `strict_settings` (the default) a
setting the device did not take raises `CameraSettingsError` at `connect()`; otherwise the camera runs
with what the device gives and `camera.setting_mismatches` lists the differences.

A source that is a file plays like a live camera: frames are paced at the file's fps (`pace_file`)
and the file starts over at its end (`loop_file`). Tests use small generated video files.

When reads fail, the thread releases the capture and reopens the source with exponential backoff
(`reconnect_attempts`, `reconnect_backoff_s`); `stats.reconnects` counts the successes. While it is
away the newest frame ages, so `read_latest` raises `StaleFrameError` rather than returning an old
image. Once the source is given up (or a non-looping file ends) reads raise `CameraStoppedError`.

Example:
    config = OpenCVCameraConfig(source=0, width=640, height=480, fps=30, fourcc="MJPG")
    with OpenCVCamera(config) as camera:          # opens, applies and reads back, waits for a frame
        frame = camera.read_latest()              # newest frame, at most max_frame_age_s old
        frame = camera.async_read(timeout_s=0.2)  # blocks for a frame not returned before
        image_rgb, t_s = frame.image, frame.timestamp_s
"""

from __future__ import annotations

import enum
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cv2
import numpy as np

from hardware.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError, HardwareError

logger = logging.getLogger(__name__)


# ---- errors ------------------------------------------------------------------------------------
class CameraError(HardwareError):
    """Base of the camera errors."""


class CameraOpenError(CameraError):
    """The source could not be opened, or it opened but delivered no frame."""


@dataclass(frozen=True)
class SettingMismatch:
    name: str  # "width", "height", "fps" or "fourcc"
    requested: Any
    actual: Any

    def __str__(self) -> str:
        return f"{self.name}={self.requested!r} (reads back {self.actual!r})"


class CameraSettingsError(CameraError):
    """The device did not accept the requested settings (found by reading them back)."""

    def __init__(self, camera: str, mismatches: tuple[SettingMismatch, ...]) -> None:
        self.mismatches = mismatches
        super().__init__(
            f"{camera} did not accept {', '.join(map(str, mismatches))}. Request a mode the camera lists "
            "(`v4l2-ctl --list-formats-ext -d /dev/videoN`), use fourcc='MJPG' for large frames on USB 2, "
            "leave a setting None to take the camera's own, or pass strict_settings=False to run with "
            "what it gives."
        )


class StaleFrameError(CameraError):
    def __init__(self, camera: str, age_s: float, max_age_s: float) -> None:
        self.age_s = age_s
        self.max_age_s = max_age_s
        super().__init__(
            f"newest frame of {camera} is {age_s * 1e3:.0f} ms old, over the {max_age_s * 1e3:.0f} ms limit "
            "(camera stalled or reconnecting; check `camera.stats`, USB bandwidth and exposure, or raise "
            "max_frame_age_s)"
        )


class FrameTimeoutError(CameraError):
    """`async_read` saw no new frame within its timeout."""


class CameraStoppedError(CameraError):
    """The reader thread has stopped for good: the source was given up or a non-looping file ended."""


# ---- config and results ------------------------------------------------------------------------
class ColorOrder(enum.Enum):
    RGB = "rgb"  # what learners and video files expect
    BGR = "bgr"  # OpenCV's own order (no conversion)


@dataclass
class OpenCVCameraConfig:
    """Args:
    source: device index (0), device path (prefer stable `/dev/v4l/by-id/...` paths when several
        identical cameras are plugged in, lerobot #2754), stream url, or video file.
    width, height: frame size [px]; None keeps the device's.
    fps: frame rate [Hz]; None keeps the device's. For files it must equal the file's rate.
    fourcc: pixel format, 4 characters ("MJPG", "YUYV"); None keeps the device's. MJPG needs about
        1/16 of YUYV's USB bandwidth at 640x480.
    color: channel order of `Frame.image`.
    strict_settings: raise CameraSettingsError when a setting reads back different; False logs a
        warning and records the differences in `camera.setting_mismatches`.
    max_frame_age_s: default limit of `read_latest` [s]; None disables the check.
    connect_timeout_s: how long `connect()` waits for the first frame [s].
    failures_before_reconnect: consecutive failed reads that count as a lost source.
    reconnect_attempts: reopen attempts after a lost source before giving up; 0 gives up at once.
    reconnect_backoff_s: delay before the first reopen attempt [s]; it doubles every attempt ...
    reconnect_backoff_max_s: ... up to this [s].
    api_preference: OpenCV backend, a `cv2.CAP_*` constant (0 = any, `cv2.CAP_V4L2` = 200).
    pace_file: a file source delivers frames at the file's fps, like a live camera; False reads as
        fast as it decodes.
    loop_file: a file source starts over at its end; False stops the camera there.
    """

    source: int | str
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    fourcc: str | None = None
    color: ColorOrder = ColorOrder.RGB
    strict_settings: bool = True
    max_frame_age_s: float | None = 0.5
    connect_timeout_s: float = 5.0
    failures_before_reconnect: int = 3
    reconnect_attempts: int = 5
    reconnect_backoff_s: float = 0.1
    reconnect_backoff_max_s: float = 2.0
    api_preference: int = 0
    pace_file: bool = True
    loop_file: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            self.source = os.fspath(self.source)
        if isinstance(self.source, bool) or not isinstance(self.source, int | str):
            raise ValueError(f"source must be a device index or a path/url string, got {self.source!r}")
        if isinstance(self.source, int) and self.source < 0:
            raise ValueError(f"source index must be >= 0, got {self.source}")
        if isinstance(self.source, str) and not self.source:
            raise ValueError("source is an empty string; give a device index, path or url")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 px or None (device default), got {value}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0 Hz or None (device default), got {self.fps}")
        if self.fourcc is not None and (len(self.fourcc) != 4 or not self.fourcc.isascii()):
            raise ValueError(f"fourcc must be 4 ASCII characters such as 'MJPG' or None, got {self.fourcc!r}")
        if self.max_frame_age_s is not None and not self.max_frame_age_s > 0:
            raise ValueError(f"max_frame_age_s must be > 0 s or None (no check), got {self.max_frame_age_s}")
        if not self.connect_timeout_s > 0:
            raise ValueError(f"connect_timeout_s must be > 0 s, got {self.connect_timeout_s}")
        if self.failures_before_reconnect < 1:
            raise ValueError(f"failures_before_reconnect must be >= 1, got {self.failures_before_reconnect}")
        if self.reconnect_attempts < 0:
            raise ValueError(f"reconnect_attempts must be >= 0, got {self.reconnect_attempts}")
        if not 0 <= self.reconnect_backoff_s <= self.reconnect_backoff_max_s:
            raise ValueError(
                f"need 0 <= reconnect_backoff_s ({self.reconnect_backoff_s}) <= reconnect_backoff_max_s "
                f"({self.reconnect_backoff_max_s})"
            )


@dataclass(frozen=True)
class Frame:
    """One image and when the host received it.

    image: (H, W, 3) uint8 in `config.color` order, read-only (the same array goes to every caller).
    timestamp_s: `time.monotonic()` when the read returned (host arrival, not exposure time).
    index: frames delivered since `connect()`, from 0; increases by one per frame read from the
        source, across loops of a file and reconnects. A gap between two returned frames means
        frames were dropped in favour of newer ones.
    """

    image: np.ndarray
    timestamp_s: float
    index: int


@dataclass(frozen=True)
class CameraSettings:
    """What the device reports after the settings were applied."""

    width: int
    height: int
    fps: float
    fourcc: str


@dataclass
class CameraStats:
    frames: int = 0  # frames delivered
    read_failures: int = 0  # reads that returned nothing (end of a looping file excluded)
    reconnects: int = 0  # successful reopenings of the source


class VideoCaptureLike(Protocol):
    """The part of `cv2.VideoCapture` the camera uses (lets tests wrap the real one)."""

    def isOpened(self) -> bool: ...  # noqa: N802 (OpenCV's name)
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def set(self, prop: int, value: float) -> bool: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[int | str, int], VideoCaptureLike]


def fourcc_to_str(code: float) -> str:
    """Decode CAP_PROP_FOURCC (a float holding 4 little-endian bytes) to its 4 characters."""
    value = int(code)
    return "".join(chr((value >> (8 * i)) & 0xFF) for i in range(4))


# ---- the camera --------------------------------------------------------------------------------
class OpenCVCamera:
    """A camera (or video file) read by a background thread; see the module docstring."""

    def __init__(self, config: OpenCVCameraConfig, capture_factory: CaptureFactory = cv2.VideoCapture) -> None:
        self.config = config
        self._capture_factory = capture_factory
        self._is_file = False
        self._cond = threading.Condition()
        self._stop = threading.Event()  # one per connection: a reader stuck in a read never revives
        self._stop.set()
        self._thread: threading.Thread | None = None
        self._latest: Frame | None = None
        self._last_returned_index = -1
        self._stopped_reason: str | None = None
        self._stats = CameraStats()
        self.settings: CameraSettings | None = None
        self.setting_mismatches: tuple[SettingMismatch, ...] = ()

    def __repr__(self) -> str:
        return f"OpenCVCamera({self.config.source!r})"

    # ---- connection ----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    @property
    def stats(self) -> CameraStats:
        with self._cond:
            return replace(self._stats)

    def connect(self) -> None:
        """Open the source, apply and read back the settings, start the reader, wait for a frame."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(repr(self))
        self._is_file = isinstance(self.config.source, str) and os.path.isfile(self.config.source)
        capture = self._open()
        with self._cond:
            self._latest = None
            self._last_returned_index = -1
            self._stopped_reason = None
            self._stats = CameraStats()
            self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._read_loop, args=(capture, self._stop), name=f"camera-{self.config.source}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.config.connect_timeout_s
        with self._cond:
            while self._latest is None and self._stopped_reason is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            reason = self._stopped_reason
            got_frame = self._latest is not None
        if not got_frame:
            self.disconnect()
            raise CameraOpenError(
                f"{self} opened but delivered no frame within {self.config.connect_timeout_s} s"
                + (f" ({reason})" if reason else "")
                + ". Check that no other program holds the camera and that the settings name a mode it "
                "supports, or raise connect_timeout_s."
            )

    def disconnect(self) -> None:
        """Stop and join the reader thread (it releases the capture). Safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # wake async_read callers
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():  # a driver read can block for seconds (V4L2 select timeout)
                logger.warning("%s: reader thread still blocked in a read; it exits after that read", self)

    def __enter__(self) -> OpenCVCamera:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # ---- reading -------------------------------------------------------------------------------
    def read_latest(self, max_age_s: float | None = None) -> Frame:
        """The newest frame, without waiting; StaleFrameError if older than the limit.

        max_age_s: limit [s] for this call; None uses `config.max_frame_age_s` (which may disable it).
        """
        limit = self.config.max_frame_age_s if max_age_s is None else max_age_s
        with self._cond:
            self._raise_if_unreadable()
            frame = self._latest
            assert frame is not None  # connect() returned only after the first frame
            age_s = time.monotonic() - frame.timestamp_s
            if limit is not None and age_s > limit:
                raise StaleFrameError(repr(self), age_s, limit)
            self._last_returned_index = frame.index
            return frame

    def async_read(self, timeout_s: float = 0.2) -> Frame:
        """Wait for a frame newer than the last one returned (by either read) and return it."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._raise_if_unreadable()
                frame = self._latest
                if frame is not None and frame.index > self._last_returned_index:
                    self._last_returned_index = frame.index
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    age_ms = (time.monotonic() - frame.timestamp_s) * 1e3 if frame is not None else math.inf
                    raise FrameTimeoutError(
                        f"no new frame from {self} within {timeout_s * 1e3:.0f} ms (newest is {age_ms:.0f} ms old; "
                        f"{self._stats.reconnects} reconnect(s), {self._stats.read_failures} failed read(s)). "
                        "Raise timeout_s above one frame period, or check the camera's fps and exposure."
                    )
                self._cond.wait(remaining)

    def _raise_if_unreadable(self) -> None:
        # Called with the lock held.
        if self._thread is None or self._stop.is_set():
            raise DeviceNotConnectedError(repr(self))
        if self._stopped_reason is not None:
            raise CameraStoppedError(f"{self} stopped: {self._stopped_reason}")

    # ---- opening and settings ------------------------------------------------------------------
    def _open(self) -> VideoCaptureLike:
        """A capture with settings applied and read back; raises CameraOpenError/CameraSettingsError."""
        capture = self._capture_factory(self.config.source, self.config.api_preference)
        if not capture.isOpened():
            capture.release()
            source = self.config.source
            missing = isinstance(source, str) and "://" not in source and not os.path.exists(source)
            raise CameraOpenError(
                f"cannot open {self}"
                + (": no such file or device" if missing else "")
                + ". Check the index or path (`ls /dev/v4l/by-id/`), permissions (group `video`) and that no "
                "other program holds the camera."
            )
        try:
            settings, mismatches = self._apply_settings(capture)
        except Exception:
            capture.release()
            raise
        if mismatches:
            if self.config.strict_settings:
                capture.release()
                raise CameraSettingsError(repr(self), mismatches)
            logger.warning("%s runs with %s", self, ", ".join(map(str, mismatches)))
        self.settings = settings
        self.setting_mismatches = mismatches
        return capture

    def _apply_settings(self, capture: VideoCaptureLike) -> tuple[CameraSettings, tuple[SettingMismatch, ...]]:
        cfg = self.config
        # Order matters: FOURCC, then size, then rate (a size change can reset the rate).
        if cfg.fourcc is not None:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*cfg.fourcc))
        if cfg.width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        if cfg.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps is not None:
            capture.set(cv2.CAP_PROP_FPS, cfg.fps)
        # The return value of set() says little (V4L2 returns True and rounds); only a read-back does.
        settings = CameraSettings(
            width=round(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=round(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            fourcc=fourcc_to_str(capture.get(cv2.CAP_PROP_FOURCC)),
        )
        mismatches = []
        for name in ("fourcc", "width", "height"):
            requested = getattr(cfg, name)
            if requested is not None and requested != getattr(settings, name):
                mismatches.append(SettingMismatch(name, requested, getattr(settings, name)))
        if cfg.fps is not None and not math.isclose(cfg.fps, settings.fps, rel_tol=1e-2):
            mismatches.append(SettingMismatch("fps", cfg.fps, settings.fps))
        return settings, tuple(mismatches)

    # ---- the reader thread ---------------------------------------------------------------------
    def _pace_period_s(self) -> float | None:
        if not (self._is_file and self.config.pace_file):
            return None  # a live source paces itself: read() blocks until the next frame
        fps = self.settings.fps if self.settings is not None else 0.0
        return 1.0 / fps if fps > 0 else None

    def _read_loop(self, capture: VideoCaptureLike | None, stop: threading.Event) -> None:
        period_s = self._pace_period_s()
        next_read_s = time.monotonic()
        failures = 0
        try:
            while capture is not None and not stop.is_set():
                if period_s is not None:
                    delay_s = next_read_s - time.monotonic()
                    if delay_s > 0 and stop.wait(delay_s):
                        break
                    # Absolute deadlines; when over a frame late, skip ahead rather than catch up.
                    next_read_s = max(next_read_s + period_s, time.monotonic())
                ok, image = capture.read()
                if not ok and self._is_file:
                    if not self.config.loop_file:
                        self._stop_reading("end of file (set loop_file=True to play it again)", stop)
                        break
                    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    ok, image = capture.read()
                if ok and image is not None:
                    failures = 0
                    self._publish(image, time.monotonic(), stop)
                    continue
                failures += 1
                with self._cond:
                    if not stop.is_set():
                        self._stats.read_failures += 1
                if failures < self.config.failures_before_reconnect:
                    continue
                logger.warning("%s: %d reads failed in a row; reopening the source", self, failures)
                capture.release()
                capture = self._reconnect(stop)
                failures = 0
                period_s = self._pace_period_s()  # the reopened file may have another rate
                next_read_s = time.monotonic()
        except Exception as exc:  # surfaced to readers as CameraStoppedError, never dropped
            logger.exception("%s: reader thread failed", self)
            self._stop_reading(f"reader thread failed: {type(exc).__name__}: {exc}", stop)
        finally:
            if capture is not None:
                capture.release()

    def _publish(self, image: np.ndarray, timestamp_s: float, stop: threading.Event) -> None:
        if self.config.color is ColorOrder.RGB and image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        image.flags.writeable = False
        with self._cond:
            if stop.is_set():  # disconnected meanwhile; the frame belongs to no connection
                return
            self._latest = Frame(image, timestamp_s, self._stats.frames)
            self._stats.frames += 1
            self._cond.notify_all()

    def _reconnect(self, stop: threading.Event) -> VideoCaptureLike | None:
        """Reopen the source with exponential backoff; None when stopped or given up."""
        cfg = self.config
        last_error: Exception | None = None
        for attempt in range(cfg.reconnect_attempts):
            delay_s = min(cfg.reconnect_backoff_s * 2**attempt, cfg.reconnect_backoff_max_s)
            if stop.wait(delay_s):
                return None
            try:
                capture = self._open()
            except CameraError as err:
                last_error = err
                logger.info("%s: reopen attempt %d/%d failed: %s", self, attempt + 1, cfg.reconnect_attempts, err)
                continue
            with self._cond:
                if not stop.is_set():
                    self._stats.reconnects += 1
            logger.info("%s: source reopened after %d attempt(s)", self, attempt + 1)
            return capture
        self._stop_reading(
            f"source lost and {cfg.reconnect_attempts} reconnect attempt(s) failed"
            + (f" (last error: {last_error})" if last_error else "")
            + ". Check the cable and USB bandwidth (`dmesg`), or raise reconnect_attempts",
            stop,
        )
        return None

    def _stop_reading(self, reason: str, stop: threading.Event) -> None:
        logger.error("%s stopped: %s", self, reason)
        with self._cond:
            if stop.is_set():
                return
            self._stopped_reason = reason
            self._cond.notify_all()
