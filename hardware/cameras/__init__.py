"""Cameras: OpenCV capture with a reader thread, timestamped latest frame, read-back settings, reconnect."""

from hardware.cameras.opencv import (
    CameraError,
    CameraOpenError,
    CameraSettings,
    CameraSettingsError,
    CameraStats,
    CameraStoppedError,
    ColorOrder,
    Frame,
    FrameTimeoutError,
    OpenCVCamera,
    OpenCVCameraConfig,
    SettingMismatch,
    StaleFrameError,
)

__all__ = [
    "CameraError", "CameraOpenError", "CameraSettings", "CameraSettingsError", "CameraStats", "CameraStoppedError",
    "ColorOrder", "Frame", "FrameTimeoutError", "OpenCVCamera", "OpenCVCameraConfig", "SettingMismatch",
    "StaleFrameError",
]
