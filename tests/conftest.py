"""Pick the headless GL backend before any test module imports mujoco (MuJoCo reads MUJOCO_GL once, at
import), so camera tests render in the same process whichever test file happens to import mujoco first."""

from envs.rendering import default_gl_backend

default_gl_backend()
