"""Fixtures: the in-repo Panda at the pick-cube home pose, state computed."""

from __future__ import annotations

import pytest

from tests.controllers.panda_arm import SCENE_PATH, Arm, make_arm


@pytest.fixture
def arm() -> Arm:
    """The Panda alone (no table, no cube) at the pick-cube home pose, state computed."""
    return make_arm()


@pytest.fixture
def scene_arm() -> Arm:
    """The Panda in the pick-cube scene (table top at z = 0) at home."""
    return make_arm(SCENE_PATH)
