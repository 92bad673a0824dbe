"""The in-repo Panda (alone, or in the pick-cube scene) at the pick-cube home pose, for controller tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from controllers.robot_model import RobotModel
from envs.panda_pick_cube import ARM_ACTUATORS, ARM_JOINTS, SCENE_PATH, TCP_SITE

PANDA_XML = SCENE_PATH.parent / "panda.xml"
HOME_Q = np.array([0.0, -0.110, 0.0, -2.273, 0.0, 2.163, math.pi / 4])


@dataclass
class Arm:
    model: mujoco.MjModel
    data: mujoco.MjData
    robot: RobotModel


def make_arm(xml_path=PANDA_XML, q=HOME_Q) -> Arm:
    model = mujoco.MjModel.from_xml_path(str(xml_path))
    data = mujoco.MjData(model)
    robot = RobotModel(model, data, TCP_SITE, ARM_JOINTS, ARM_ACTUATORS)
    data.qpos[robot.qpos_slice] = q
    data.qpos[model.joint("finger_joint1").qposadr[0]] = 0.04
    data.qpos[model.joint("finger_joint2").qposadr[0]] = 0.04
    act = model.actuator("gripper")
    data.act[model.actuator_actadr[act.id]] = 0.08
    mujoco.mj_forward(model, data)
    return Arm(model, data, robot)
