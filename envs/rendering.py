"""Offscreen camera rendering with ``mujoco.Renderer``, headless included.

MuJoCo picks its OpenGL backend once, when ``mujoco`` is first imported, from the ``MUJOCO_GL``
environment variable:

- ``MUJOCO_GL=egl``: headless machines, with a GPU or without (Mesa's software rasteriser). Packages
  (Debian / Ubuntu names): ``libegl1`` (vendor-neutral EGL dispatch) plus a vendor implementation,
  ``libegl-mesa0`` (Mesa: CPU, Intel, AMD) or the NVIDIA driver's GL libraries (``libnvidia-gl-<version>``),
  and ``libgl1``.
- ``MUJOCO_GL=osmesa``: headless machines without EGL; CPU only and the slowest. Package ``libosmesa6``.
- ``MUJOCO_GL=glfw`` (MuJoCo's default when unset): desktops with a display. Packages ``libglfw3`` and
  ``libgl1``, and an X11 or Wayland session.

PyOpenGL, which the backends use, comes with the ``mujoco`` wheel.

``default_gl_backend()`` is called by ``import envs`` before anything imports MuJoCo: when ``MUJOCO_GL`` is
unset and there is no display, it sets ``MUJOCO_GL`` to ``egl`` if an EGL library is installed, else to
``osmesa`` if OSMesa is. It never overrides a value that is already set, and it can do nothing once
``mujoco`` has been imported (set ``MUJOCO_GL`` yourself in that case, e.g. in the shell or CI).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mujoco

GL_PACKAGES = {
    "egl": "libegl1 with libegl-mesa0 (or the NVIDIA driver's GL libraries), libgl1",
    "osmesa": "libosmesa6",
    "glfw": "libglfw3, libgl1 and a display",
}


def default_gl_backend() -> str | None:
    """Choose a headless ``MUJOCO_GL`` when none is set; returns the value in effect (None: MuJoCo's default).

    Has an effect only on Linux without ``DISPLAY``/``WAYLAND_DISPLAY``, with ``MUJOCO_GL`` unset and
    ``mujoco`` not yet imported.
    """
    current = os.environ.get("MUJOCO_GL")
    if current is not None or "mujoco" in sys.modules or not sys.platform.startswith("linux"):
        return current
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            return backend
    return None


def gl_error_message(err: BaseException) -> str:
    """What failed and how to fix it, for an error raised while creating an OpenGL context."""
    backend = os.environ.get("MUJOCO_GL") or "glfw (MUJOCO_GL unset)"
    hints = "; ".join(f"MUJOCO_GL={name} needs {packages}" for name, packages in GL_PACKAGES.items())
    return (
        f"cannot create an OpenGL context for camera images with MUJOCO_GL={backend}: {err}. "
        f"Set MUJOCO_GL before Python imports mujoco ({hints})."
    )


class CameraRenderer:
    """RGB images of named MJCF cameras at one resolution, drawn with one ``mujoco.Renderer``.

    Args:
        model: the compiled model (its ``<visual><global offwidth offheight>`` must be >= the size).
        height, width: image size [pixels].
        shadows: draw shadows (a depth cue); with software OpenGL (Mesa llvmpipe) they cost about 4x.

    Raises RuntimeError (with the packages to install) when no OpenGL context can be created.
    """

    def __init__(self, model: mujoco.MjModel, height: int, width: int, shadows: bool = True) -> None:
        import mujoco

        try:
            self._renderer = mujoco.Renderer(model, height=height, width=width)
        except Exception as err:  # the GL backends raise many types (ImportError, FatalError, GLError, ...)
            raise RuntimeError(gl_error_message(err)) from err
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = shadows

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """A (height, width, 3) uint8 image from ``camera``; camera and light poses must be current
        (``mj_camlight`` after the last kinematics)."""
        self._renderer.update_scene(data, camera=camera)
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


def can_render() -> tuple[bool, str]:
    """Whether this process can create an OpenGL context (tries once, on a one-body model), and why not."""
    import mujoco

    model = mujoco.MjModel.from_xml_string(
        '<mujoco><worldbody><camera name="c" pos="0 0 1"/><geom size=".1"/></worldbody></mujoco>'
    )
    try:
        renderer = CameraRenderer(model, 8, 8)
    except RuntimeError as err:
        return False, str(err)
    try:
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        renderer.render(data, "c")
    except Exception as err:  # a context that cannot draw fails here
        return False, gl_error_message(err)
    finally:
        renderer.close()
    return True, ""
