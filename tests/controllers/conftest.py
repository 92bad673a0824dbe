"""Fixtures: the in-repo Panda at the pick-cube home pose, state computed."""

from __future__ import annotations

import pytest

from tests.controllers.panda_arm import Arm, make_arm


@pytest.fixture
def arm() -> Arm:
    """The Panda alone (no table) at the pick-cube home pose, 500 Hz, state computed."""
    return make_arm()


@pytest.fixture
def table_arm() -> Arm:
    """The Panda above a rigid table top at z = 0, at home."""
    return make_arm(table=True)
