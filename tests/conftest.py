"""Session-wide test setup.

- Pick the headless GL backend before any test module imports mujoco (MuJoCo reads MUJOCO_GL once, at
  import), so camera tests render in the same process whichever test file happens to import mujoco first.
- Restore torch's intra-op thread count after every test module: modules that pin it (tiny models run
  faster on one thread) must not change the numerics of later modules, e.g. the resume test that compares
  an in-process run bit for bit with a subprocess started at the default thread count.
"""

import pytest
import torch

from envs.rendering import default_gl_backend

default_gl_backend()

_DEFAULT_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    yield
    if torch.get_num_threads() != _DEFAULT_THREADS:
        torch.set_num_threads(_DEFAULT_THREADS)
