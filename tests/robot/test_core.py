"""robot/core: updater (clipping, accumulation), Polyak targets, atomic checkpoints, extras guard, configs."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from robot.config import ConfigError, apply_overrides, field_docs, from_dict, parse_value, to_dict
from robot.core.checkpoint import atomic_directory, latest_checkpoint, list_checkpoints, prune_checkpoints
from robot.core.extras import MissingExtraError, require
from robot.core.optim import OptimConfig, Updater, polyak_update


def test_gradient_accumulation_equals_one_big_batch():
    """Two half-batch backward passes (each normalised by the full count) give the full-batch step."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 3), torch.randn(8)
    nets = [torch.nn.Linear(3, 1) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    full = Updater(nets[0].parameters(), OptimConfig(lr=0.1))
    full.update(((nets[0](x).squeeze(-1) - y) ** 2).sum() / 8)
    accum = Updater(nets[1].parameters(), OptimConfig(lr=0.1))
    for part in (slice(0, 4), slice(4, 8)):
        accum.backward(((nets[1](x[part]).squeeze(-1) - y[part]) ** 2).sum() / 8)
    accum.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_gradient_clipping_bounds_the_step_and_reports_the_norm():
    w = torch.nn.Parameter(torch.zeros(4))
    updater = Updater([w], OptimConfig(lr=1.0, grad_clip_norm=0.5))
    norm = updater.update((w * 100.0).sum())  # gradient norm 200
    assert norm.item() == pytest.approx(200.0)
    assert w.grad is None  # cleared after the step


def test_warmup_scales_the_learning_rate():
    w = torch.nn.Parameter(torch.zeros(1))
    updater = Updater([w], OptimConfig(lr=1.0, warmup_steps=4))
    lrs = []
    for _ in range(5):
        lrs.append(updater.optimizer.param_groups[0]["lr"])
        updater.update(w.sum())
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_direct_fused_step_matches_torch_adamw_bit_for_bit():
    """Updater calls the fused AdamW kernel itself after the first step, with one step counter for all
    parameters: the weights and optimizer state must be exactly what torch's own AdamW.step computes, with
    weight decay, warmup, across a state reload, and after a step where one parameter had no gradient (its
    step count falls behind, so the counters are no longer shared)."""
    torch.manual_seed(0)
    shapes = [(5, 3), (3,), (4, 2, 2)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    reference = [p.detach().clone().requires_grad_(True) for p in ours]
    config = OptimConfig(lr=1e-2, weight_decay=0.1, warmup_steps=3)
    updater = Updater(ours, config)
    torch_adamw = torch.optim.AdamW(reference, lr=1e-2, weight_decay=0.1, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(torch_adamw, lambda step: min(1.0, (step + 1) / 3))
    for step in range(10):
        if step == 4:  # a checkpoint reload replaces the state tensors the direct call reads
            saved = updater.state_dict()
            steps = [s["step"] for s in saved["optimizer"]["state"].values()]
            assert len({t.data_ptr() for t in steps}) == len(steps)  # a checkpoint holds no shared tensors
            updater.load_state_dict(saved)
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, reference, grads, strict=True):
            p.grad, q.grad = (None, None) if step == 6 and p is ours[1] else (g.clone(), g.clone())
        updater.step()
        torch_adamw.step()
        schedule.step()
        assert (updater._fused_state is not None) == (step < 6)  # the direct call is in use for the next step
        for p, q in zip(ours, reference, strict=True):
            assert torch.equal(p, q)
            assert p.grad is None
    for p, q in zip(ours, reference, strict=True):
        assert torch.equal(updater.optimizer.state[p]["exp_avg_sq"], torch_adamw.state[q]["exp_avg_sq"])
        assert torch.equal(updater.optimizer.state[p]["step"], torch_adamw.state[q]["step"])


def test_polyak_update_moves_targets_by_tau():
    target, online = [torch.zeros(3), torch.ones(2)], [torch.ones(3), torch.zeros(2)]
    polyak_update(target, online, 0.1)
    torch.testing.assert_close(target[0], torch.full((3,), 0.1))
    torch.testing.assert_close(target[1], torch.full((2,), 0.9))


def test_optim_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr: expected a positive learning rate, got -1"):
        OptimConfig(lr=-1)


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    root = tmp_path / "checkpoints"
    with atomic_directory(root / "step_000000010") as tmp:
        (tmp / "a.txt").write_text("ok")
    with pytest.raises(RuntimeError), atomic_directory(root / "step_000000020") as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("crash while writing")
    assert [p.name for p in list_checkpoints(root)] == ["step_000000010"]
    assert latest_checkpoint(root).name == "step_000000010"
    assert not any(p.name.startswith(".tmp") for p in root.iterdir())


def test_a_stale_temporary_directory_is_never_taken_for_a_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    (root / ".tmp-step_000000050").mkdir(parents=True)  # what a kill -9 mid-write leaves
    with atomic_directory(root / "step_000000010"):
        pass
    assert latest_checkpoint(root).name == "step_000000010"
    prune_checkpoints(root, keep=1)
    assert sorted(p.name for p in root.iterdir()) == ["step_000000010"]


def test_missing_extra_names_the_pip_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'robot-stack\[ray\]'"):
        require("a_module_that_is_not_installed", extra="ray")
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        require("json", extra="nope")


@dataclasses.dataclass
class Inner:
    width: int = 8
    """Layer width."""
    dims: tuple[int, ...] = (1, 2)


@dataclasses.dataclass
class Outer:
    lr: float = 1e-3
    """Learning rate."""
    name: str = "x"
    limit: float | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_overrides_parse_types_and_keep_other_defaults():
    cfg = apply_overrides(Outer(), {"lr": "0.5", "inner.dims": "3,4,5", "limit": "2"})
    assert cfg == Outer(lr=0.5, limit=2.0, inner=Inner(dims=(3, 4, 5)))
    assert apply_overrides(cfg, {"limit": "none"}).limit is None
    assert from_dict(Outer(), to_dict(cfg)) == cfg


def test_override_errors_name_key_value_and_expectation():
    with pytest.raises(ConfigError, match="unknown config key 'widht'"):
        apply_overrides(Outer(), {"widht": 3})
    with pytest.raises(ConfigError, match="did you mean inner.width"):
        apply_overrides(Outer(), {"width": 3})
    with pytest.raises(ConfigError, match=r"inner.width: expected int, got '2.5'"):
        apply_overrides(Outer(), {"inner.width": "2.5"})
    with pytest.raises(ConfigError, match="expected true or false"):
        parse_value("flag", "maybe", bool)


def test_field_docs_come_from_attribute_docstrings():
    assert field_docs(Outer)["lr"] == "Learning rate."
    assert "name" not in field_docs(Outer)


FAULTS_PER_ROUND = """
import resource, sys, torch
from robot.core.device import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def faults_per_round():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(10 << 20).fill_(1.0)  # 40 MB of float32, touched, then freed
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
faults_per_round()  # the first rounds map the memory (the heap may settle over a few)
print(min(faults_per_round() for _ in range(4)))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc malloc tuning")
def test_retained_freed_memory_is_reused_without_page_faults():
    """A 40 MB buffer freed and allocated again, in a fresh interpreter: with glibc's defaults (above 32 MB
    everything is mmapped and unmapped on free) every round faults in all its ~10,000 pages; once
    `retain_freed_memory` ran, once the heap has settled, rounds fault almost none."""
    def faults(mode: str) -> float:
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND, mode], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parents[2])
        return float(out.stdout.split()[-1])

    assert faults("default") > 5_000
    assert faults("retain") < 500
