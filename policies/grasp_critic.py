"""HIL-SERL's grasp critic: the gripper as a discrete choice learned by double DQN beside the SAC head.

Reference (HIL-SERL `sac_hybrid_single.py`): continuous SAC acts on the end-effector deltas; a separate
Q-network over 3 gripper actions {-1: open, 0: stay, +1: close} picks the gripper command by argmax,
trained with a Double-DQN target (argmax from the online net, value from the target net). Stored
gripper actions map to an index with the env's own thresholds (a <= -0.5 opens, a >= 0.5 closes,
anything between keeps the command), so demos, interventions and the policy's commands all land on
the index that the env executed.

The grasp critic regresses on the same per-step reward as the continuous critic, in every critic step
(the env subtracts its gripper-toggle penalty from that reward, so the penalty always reaches this
head; LeRobot's port dropped it on its final UTD step, reference section 3.1). It reads the shared
encoder's features with a stop-gradient, like the actor: only the continuous critic loss trains the
encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from policies.sac import mlp

GRASP_COMMANDS = (-1.0, 0.0, 1.0)
"""Gripper command of each discrete action index: open, stay, close."""


@dataclass
class GraspCriticConfig:
    """Discrete gripper head (HIL-SERL's learned-gripper setup)."""

    enabled: bool = False
    """Learn the gripper with a grasp critic (the actor then outputs only the arm part of the action)."""
    hidden_dims: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the grasp Q-network."""
    epsilon: float = 0.0
    """Exploration: probability of a uniformly random gripper action when not deterministic."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon: expected a probability in [0, 1], got {self.epsilon}")


class GraspCritic(nn.Module):
    """Q(s, .) over the 3 gripper actions: (B, in) -> (B, 3)."""

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk = mlp(in_dim, hidden_dims)
        self.head = nn.Linear(hidden_dims[-1], len(GRASP_COMMANDS))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(features))


def grasp_index(gripper_action: torch.Tensor) -> torch.Tensor:
    """Discrete index (0 open, 1 stay, 2 close) of stored gripper commands, by the env's thresholds."""
    return (gripper_action > -0.5).long() + (gripper_action >= 0.5).long()


def grasp_command(index: torch.Tensor) -> torch.Tensor:
    """Gripper command value in [-1, 1] of each discrete index."""
    return index.float() - 1.0


def double_dqn_target(
    reward: torch.Tensor,
    terminated: torch.Tensor,
    discount: torch.Tensor | float,
    next_q_online: torch.Tensor,
    next_q_target: torch.Tensor,
) -> torch.Tensor:
    """r + discount * (1 - terminated) * Q_target(s', argmax_a Q_online(s', a)), shape (B,)."""
    best = next_q_online.argmax(dim=-1, keepdim=True)  # (B, 1): action chosen by the online net
    next_v = next_q_target.gather(-1, best).squeeze(-1)  # (B,): valued by the target net
    return reward + discount * (1.0 - terminated) * next_v


def grasp_loss(q: torch.Tensor, index: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between Q(s, a_taken) and the target."""
    return (q.gather(-1, index.unsqueeze(-1)).squeeze(-1) - target).square().mean()
