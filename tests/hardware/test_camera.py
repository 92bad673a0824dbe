"""OpenCVCamera against real `cv2.VideoCapture` on generated video files.

Every frame of a test video shows its own number in binary (8 vertical stripes, white = 1), so a
test can decode which frame it received. The camera's `Frame.index` counts frames read from the
file, so for a looping file of n frames the picture must show `index % n`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hardware.cameras import (
    CameraOpenError,
    CameraSettingsError,
    CameraStoppedError,
    ColorOrder,
    FrameTimeoutError,
    OpenCVCamera,
    OpenCVCameraConfig,
    StaleFrameError,
)
from hardware.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError
from tests.hardware.conftest import wait_for

WIDTH, HEIGHT, BITS = 64, 48, 8
CONTAINERS = {"avi-mjpg": (".avi", "MJPG"), "mp4-mp4v": (".mp4", "mp4v")}


def write_video(path: Path, n_frames: int, fps: float, first_number: int = 0, codec: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {codec} into {path.suffix}")
    for number in range(first_number, first_number + n_frames):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for bit in range(BITS):
            if number >> bit & 1:
                image[:, bit * WIDTH // BITS : (bit + 1) * WIDTH // BITS] = 255
        image[:4, :4] = (255, 0, 0)  # a blue corner (BGR) to check the channel order
        writer.write(image)
    writer.release()
    return path


def shown_number(image: np.ndarray) -> int:
    """The number a test frame shows (stripes survive JPEG compression; the corner is ignored)."""
    stripes = image[8:, :, :].mean(axis=(0, 2)).reshape(BITS, WIDTH // BITS).mean(axis=1)
    return sum(1 << bit for bit in range(BITS) if stripes[bit] > 127)


def config(path: Path, **overrides) -> OpenCVCameraConfig:
    overrides.setdefault("connect_timeout_s", 2.0)
    return OpenCVCameraConfig(source=str(path), **overrides)


class Unpluggable:
    """Factory of real captures that a test can 'unplug': reads of existing captures then fail."""

    def __init__(self) -> None:
        self.captures: list[_UnpluggableCapture] = []

    def __call__(self, source, api_preference):
        capture = _UnpluggableCapture(cv2.VideoCapture(source, api_preference))
        self.captures.append(capture)
        return capture

    def unplug(self) -> None:
        for capture in self.captures:
            capture.unplugged = True


class _UnpluggableCapture:
    def __init__(self, capture: cv2.VideoCapture) -> None:
        self.capture = capture
        self.unplugged = False

    def read(self):
        return (False, None) if self.unplugged else self.capture.read()

    def __getattr__(self, name):  # isOpened, get, set, release: the real capture's
        return getattr(self.capture, name)


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "ten.avi", n_frames=10, fps=100)


# ---- settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("container", CONTAINERS.values(), ids=CONTAINERS.keys())
def test_reads_back_the_settings_it_applied(tmp_path, container):
    suffix, codec = container
    path = write_video(tmp_path / f"clip{suffix}", n_frames=5, fps=50, codec=codec)
    with OpenCVCamera(config(path, width=WIDTH, height=HEIGHT, fps=50)) as camera:
        frame = camera.read_latest()
        assert (camera.settings.width, camera.settings.height, camera.settings.fps) == (WIDTH, HEIGHT, 50)
        assert camera.setting_mismatches == ()
        assert frame.image.shape == (HEIGHT, WIDTH, 3) and frame.image.dtype == np.uint8


@pytest.mark.parametrize(
    "requested, named",
    [({"width": 32}, "width=32 (reads back 64)"), ({"fps": 30}, "fps=30 (reads back 100.0)"),
     ({"fourcc": "YUYV"}, "fourcc='YUYV' (reads back 'MJPG')")],
    ids=["width", "fps", "fourcc"],
)
def test_refuses_settings_the_source_did_not_take(video, requested, named):
    camera = OpenCVCamera(config(video, **requested))
    with pytest.raises(CameraSettingsError, match="strict_settings=False") as err:
        camera.connect()
    assert named in str(err.value)
    assert not camera.is_connected


def test_lenient_settings_run_with_what_the_source_gives(video):
    with OpenCVCamera(config(video, width=32, strict_settings=False)) as camera:
        assert [(m.name, m.requested, m.actual) for m in camera.setting_mismatches] == [("width", 32, WIDTH)]
        assert camera.read_latest().image.shape == (HEIGHT, WIDTH, 3)


def test_missing_source_names_the_path(tmp_path):
    with pytest.raises(CameraOpenError, match=r"nope\.avi.*no such file"):
        OpenCVCamera(config(tmp_path / "nope.avi")).connect()


@pytest.mark.parametrize(
    "field, value", [("fourcc", "MJP"), ("width", 0), ("fps", -1.0), ("reconnect_attempts", -1)],
    ids=["fourcc-3-chars", "width-zero", "fps-negative", "attempts-negative"],
)
def test_config_rejects_bad_values_by_name(video, field, value):
    with pytest.raises(ValueError, match=field):
        config(video, **{field: value})


# ---- frames ------------------------------------------------------------------------------------
def test_frames_arrive_in_order_and_loop_at_end_of_file(video):
    with OpenCVCamera(config(video)) as camera:
        frames = [camera.async_read(timeout_s=1.0) for _ in range(25)]  # 10-frame file: loops twice
        assert (camera.stats.read_failures, camera.stats.reconnects) == (0, 0), "looping is not a failure"
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)), "indices must strictly increase"
    assert [shown_number(f.image) for f in frames] == [i % 10 for i in indices]
    assert all(b.timestamp_s > a.timestamp_s for a, b in zip(frames, frames[1:], strict=False))


@pytest.mark.parametrize("color, corner", [(ColorOrder.RGB, (0, 0, 255)), (ColorOrder.BGR, (255, 0, 0))],
                         ids=["rgb", "bgr"])
def test_channel_order(video, color, corner):
    with OpenCVCamera(config(video, color=color)) as camera:
        image = camera.read_latest().image
    np.testing.assert_allclose(image[1, 1], corner, atol=40)
    assert not image.flags.writeable, "frames are shared between callers and must be read-only"


def test_keeps_only_the_newest_frame(video):
    with OpenCVCamera(config(video)) as camera:
        first = camera.async_read(timeout_s=1.0)
        assert wait_for(lambda: camera.stats.frames > first.index + 10)  # frames arrive while nobody reads
        delivered = camera.stats.frames
        newest = camera.async_read(timeout_s=1.0)
        assert newest.index > first.index + 5, "a slow reader must get the newest frame, not the next queued one"
        assert newest.index >= delivered - 1


def test_read_latest_refuses_a_stale_frame(tmp_path):
    slow = write_video(tmp_path / "slow.avi", n_frames=3, fps=1)  # a new frame every second
    with OpenCVCamera(config(slow)) as camera:
        assert camera.read_latest().index == 0  # within the default 0.5 s
        time.sleep(0.1)
        with pytest.raises(StaleFrameError, match=r"ms old, over the 50 ms limit"):
            camera.read_latest(max_age_s=0.05)


def test_async_read_times_out_without_a_new_frame(tmp_path):
    slow = write_video(tmp_path / "slow.avi", n_frames=3, fps=1)
    with OpenCVCamera(config(slow)) as camera:
        camera.async_read(timeout_s=1.0)
        with pytest.raises(FrameTimeoutError, match="within 50 ms"):
            camera.async_read(timeout_s=0.05)


def test_a_file_without_loop_stops_at_its_end(tmp_path):
    short = write_video(tmp_path / "short.avi", n_frames=4, fps=100)
    with OpenCVCamera(config(short, loop_file=False)) as camera:
        with pytest.raises(CameraStoppedError, match="end of file"):
            for _ in range(5):
                camera.async_read(timeout_s=1.0)
        assert camera.stats.frames == 4


def test_unpaced_file_reads_as_fast_as_it_decodes(video):
    with OpenCVCamera(config(video, pace_file=False)) as camera:
        assert wait_for(lambda: camera.stats.frames > 200, timeout_s=2.0)  # 100 fps pacing would take 2 s


# ---- reconnect ---------------------------------------------------------------------------------
def test_reconnects_when_the_source_comes_back(tmp_path):
    path = write_video(tmp_path / "cam.avi", n_frames=10, fps=100)
    factory = Unpluggable()
    cfg = config(path, reconnect_attempts=50, reconnect_backoff_s=0.01, reconnect_backoff_max_s=0.02)
    with OpenCVCamera(cfg, capture_factory=factory) as camera:
        before = camera.async_read(timeout_s=1.0)
        os.remove(path)
        factory.unplug()
        assert wait_for(lambda: camera.stats.read_failures >= cfg.failures_before_reconnect)
        time.sleep(0.1)
        with pytest.raises(StaleFrameError):
            camera.read_latest(max_age_s=0.05)
        # "Plugged back in" with other content; written aside and renamed, so no half-written file is opened.
        os.replace(write_video(tmp_path / "new.avi", n_frames=10, fps=100, first_number=100), path)
        assert wait_for(lambda: camera.stats.reconnects == 1)
        after = camera.async_read(timeout_s=1.0)
        assert after.index > before.index
        assert 100 <= shown_number(after.image) < 110
        assert len(factory.captures) >= 2


def test_gives_up_after_the_reconnect_attempts(video):
    factory = Unpluggable()
    cfg = config(video, reconnect_attempts=2, reconnect_backoff_s=0.01)
    with OpenCVCamera(cfg, capture_factory=factory) as camera:
        camera.async_read(timeout_s=1.0)
        os.remove(video)
        factory.unplug()
        assert wait_for(lambda: len(factory.captures) == 3)  # the first capture and 2 reopen attempts
        with pytest.raises(CameraStoppedError, match=r"2 reconnect attempt\(s\) failed.*no such file"):
            camera.async_read(timeout_s=1.0)
        assert camera.stats.reconnects == 0


# ---- connection --------------------------------------------------------------------------------
def test_disconnect_joins_the_reader_and_reads_then_fail(video):
    camera = OpenCVCamera(config(video))
    with camera:
        reader = camera._thread
        with pytest.raises(DeviceAlreadyConnectedError):
            camera.connect()
    assert not reader.is_alive() and not camera.is_connected
    with pytest.raises(DeviceNotConnectedError, match=r"\.connect\(\)"):
        camera.read_latest()
    camera.disconnect()  # a second disconnect is harmless
    with camera:  # and the camera connects again, counting from 0
        assert camera.read_latest().index == 0
