"""Planner training: SFT on scripted plans, RL from verifier rewards, preference optimisation on scored pairs.

One run (``robot planner sft|rl|pref``) is a sequence of phases on one model:

    tokenizer + model (new, or loaded from a checkpoint folder or an earlier run)
    -> SFT on (prompt, reference plan) pairs                  when the run starts from a new model
    -> RL: sample G plans per prompt, verify, objective loss  (--algo grpo, dr_grpo, dapo, ...)
       or preference: pairs from verified samples, pair loss  (--algo dpo, rpo, nft, inpo, mpo, tdpo)
    -> greedy evaluation on held-out tasks, checkpoint (save_pretrained), eval_summary.json

RL and preference methods are the objectives of ``objectives.py`` / ``preference.py`` over the shared
blocks of ``robot.core.policy_gradient``; every update goes through ``robot.core.optim.Updater``. A rollout
batch is one optimizer step per epoch (``rl.epochs`` > 1 re-uses it off-policy, which is where BAPO's
bounds and the clip start to bind); the loss gets the batch's global token and sequence counts.

Rewards per method: the shaped verifier reward (1 success, ``format_bonus`` well-formed failure, 0
malformed) for the GRPO family; the binary success bit for NFT and the noisy-verifier corrections, whose
derivations assume R in {0, 1}; +1 / -1 plus the step checker's flags for FAPO. The noisy-verifier methods
train on the noisy verifier's reports and are evaluated, like every method, by the exact verifier.

Where group normalisation cancels the noisy-verifier corrections: both are affine in the noisy reward with
rates shared by all completions, so a group z-score (GRPO) cancels them exactly (refused), a group-mean or
leave-one-out baseline leaves only a constant scale that Adam divides out. ``noisy_backward`` therefore runs
without a baseline (the correction acts and the gradient is unbiased for the clean reward);
``noisy_forward`` runs with leave-one-out because its baseline-free form collapsed the planner, which makes
it uncorrected RLOO on the noisy reward (``rl.noise_baseline`` overrides both; objectives.PGBCConfig and
PGFCConfig give the measurements).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import Tensor

from policies.planner.data import PlannerTask, TaskConfig, corpus, sample_tasks
from policies.planner.model import (
    ModelConfig,
    build_model,
    completion_logprobs,
    left_pad,
    load_checkpoint,
    right_pad,
    sample,
    save_checkpoint,
)
from policies.planner.objectives import Rollout, TokenBatch, get_preference_objective, get_rl_objective
from policies.planner.preference import OccupancyReg, PreferenceBatch, mpo_split
from policies.planner.tokenizer import decode, encode, train_tokenizer
from policies.planner.verifier import Verdict, Verifier, VerifierConfig
from robot.core.checkpoint import atomic_directory, atomic_write_text
from robot.core.metrics import MeanAggregator, MetricsWriter
from robot.core.optim import OptimConfig, Updater
from robot.core.policy_gradient import AdvantageEstimator, KLPlacement, LossAgg, group_all_equal
from robot.core.seeding import seed_everything
from robot.train import Reporter, SilentReporter

RL_ALGOS: dict[str, str] = {
    "grpo": "grpo",
    "dr_grpo": "dr_grpo",
    "dapo": "dapo",
    "bnpo": "bnpo",
    "bapo": "bapo",
    "steer": "steer",
    "grpo_lambda": "grpo_lambda",
    "fapo": "fapo",
    "noisy_backward": "pgbc",
    "noisy_forward": "pgfc",
    "opmd": "opmd",
    "asymre": "asymre",
}
"""``--algo`` of ``robot planner rl`` -> name in ``objectives.RL_OBJECTIVES``."""

PREF_ALGOS: dict[str, str] = {
    "dpo": "dpo", "rpo": "rpo", "nft": "nft", "inpo": "inpo", "mpo": "mpo", "tdpo": "token_dpo",
}
"""``--algo`` of ``robot planner pref`` -> objective name (NFT is a rollout objective, the others pair losses)."""

BINARY_REWARD_ALGOS = ("noisy_backward", "noisy_forward", "nft", "grpo_lambda")
"""Methods whose reward must be the success bit: the noise corrections and NFT are derived for R in {0, 1},
and GRPO-lambda reads reward > 0 as "correct" (a format bonus would count failed plans as correct)."""
NOISE_BASELINES = ("auto", "none", "group_mean", "leave_one_out")
"""Values of ``rl.noise_baseline`` (AdvantageEstimator values, plus the per-method default 'auto')."""
CHECKPOINT = "checkpoint"


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


@dataclass
class SFTConfig:
    """Supervised fine-tuning on the scripted reference plans."""

    steps: int = 300
    """Optimizer steps (0 skips SFT)."""
    batch_size: int = 32
    """(prompt, plan) pairs per step."""
    lr: float = 1e-3
    """Adam learning rate."""


@dataclass
class RLConfig:
    """Rollouts and updates of RL (and of the sampling preference methods)."""

    steps: int = 30
    """Rollout batches (for preference methods: rounds of sampling and pair updates)."""
    prompts_per_step: int = 8
    """Distinct prompts per rollout batch."""
    group_size: int = 8
    """Completions sampled per prompt (G)."""
    max_new_tokens: int = 56
    """Longest completion; longer ones are cut and count as malformed (truncated)."""
    temperature: float = 1.0
    """Sampling temperature of rollouts."""
    lr: float = 1e-3
    """Adam learning rate. Adam normalises the noisy policy gradient, so each step moves every weight by
    about lr: 2e-3 collapsed GRPO within 5 steps of 8 x 8 samples here, 1e-3 was stable for ~30."""
    epochs: int = 1
    """Optimizer steps per rollout batch (mu); > 1 makes later steps off-policy."""
    kl_coef: float | None = None
    """KL-to-reference coefficient; none = the method's default (GRPO 0.04, most others 0)."""
    max_gen_batches: int = 3
    """Dynamic sampling (DAPO, NFT): rollout batches tried to fill the step with informative groups."""
    grad_clip_norm: float = 1.0
    """Global gradient-norm clip; 0 disables."""
    noise_baseline: str = "auto"
    """Baseline of the noisy-verifier corrections: 'none', 'group_mean', 'leave_one_out', or 'auto' =
    backward 'none' (the only choice where the correction changes an Adam update), forward 'leave_one_out'
    (its baseline-free form collapses the planner; with a baseline it is uncorrected RLOO). A group z-score
    would cancel both corrections exactly and is not offered."""

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "max_new_tokens", "epochs", "max_gen_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.noise_baseline not in NOISE_BASELINES:
            raise ValueError(f"noise_baseline must be one of {', '.join(NOISE_BASELINES)}, got {self.noise_baseline!r}")


@dataclass
class PrefConfig:
    """Preference methods: per prompt group, chosen = a successful sample, rejected = the worst-scored one."""

    beta: float | None = None
    """DPO-family beta; none = the method's default (DPO 0.1, RPO 0.05)."""
    chi2: float = 0.0
    """Coefficient of the sqrt chi^2 occupancy regulariser to the reference (Correlated Proxies); 0 = off."""
    inner_steps: int = 2
    """Optimizer steps on each round's pairs."""
    lr: float = 2e-4
    """Adam learning rate of the pair losses (DPO and RPO collapsed to one-skill plans at 1e-3, and lost
    format at 5e-4, on 8 pairs per round; NFT and MPO's RL stage use rl.lr)."""
    reference_fallback: bool = False
    """When no sample of a prompt succeeds, use the scripted reference plan as the chosen response."""
    mpo_easy_fraction: float = 0.5
    """MPO: share of pairs (largest reward gap) trained with DPO in stage 1; stage 2 is GRPO on the rest."""


@dataclass
class PlannerConfig:
    """Everything `robot planner` needs; saved as config.json in the run folder."""

    command: str = "sft"
    """Which training ran: 'sft', 'rl' or 'pref' (set by the command)."""
    algo: str = ""
    """RL method (rl) or preference method (pref); see RL_ALGOS and PREF_ALGOS."""
    seed: int = 0
    """Seed of task sampling, initialisation, rollouts and verifier noise."""
    device: str = "cpu"
    """'cpu' or 'cuda[:N]' (a tiny model runs fastest on the CPU)."""
    init: str = ""
    """Start from this run folder (its checkpoint) or checkpoint folder instead of a new model (then no SFT)."""
    train_tasks: int = 2000
    """Tasks drawn for training (prompts of SFT and RL)."""
    eval_tasks: int = 200
    """Held-out tasks for evaluation (greedy decoding)."""
    eval_seed: int = 1_000_003
    """Seed of the held-out tasks (fixed so that runs with different seeds are scored on the same set)."""
    eval_samples: int = 4
    """Plans sampled per held-out task for the sampled success rate; 0 = greedy evaluation only."""
    eval_every: int = 0
    """Evaluate every this many RL/preference steps; 0 = only at the start and the end."""
    log_every: int = 10
    """Write aggregated training metrics every this many steps."""
    run_root: str = "runs"
    """Folder under which run folders are created."""
    name: str = ""
    """Optional suffix of the run folder name."""
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    verifier: VerifierConfig = field(default_factory=VerifierConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    pref: PrefConfig = field(default_factory=PrefConfig)

    def __post_init__(self) -> None:
        if self.command not in ("sft", "rl", "pref"):
            raise ValueError(f"command must be 'sft', 'rl' or 'pref', got {self.command!r}")
        valid = {"rl": RL_ALGOS, "pref": PREF_ALGOS}.get(self.command)
        if valid is not None and self.algo not in valid:
            raise ValueError(f"--algo {self.algo!r} is not a {self.command} method; valid: {', '.join(valid)}")
        if self.train_tasks <= 0 or self.eval_tasks <= 0:
            raise ValueError("train_tasks and eval_tasks must be positive")
        if self.log_every <= 0 or self.eval_every < 0:
            raise ValueError("log_every must be positive and eval_every >= 0")


# --------------------------------------------------------------------------------------------------
# Progress reporting
# --------------------------------------------------------------------------------------------------


class PlannerReporter(Reporter, Protocol):
    """``robot train``'s reporter plus ``phase``: a run has several (sft, then the method), each with a bar."""

    def phase(self, name: str, total: int) -> None: ...


class SilentPlannerReporter(SilentReporter):
    def phase(self, name: str, total: int) -> None:
        pass


# --------------------------------------------------------------------------------------------------
# Rollout rows
# --------------------------------------------------------------------------------------------------


class Row(NamedTuple):
    task: int
    """Index into the trainer's task list."""
    group: int
    completion: list[int]
    """Sampled token ids, end-of-sequence included when it was produced."""
    truncated: bool
    verdict: Verdict


def _objective_config(algo: str, rl: RLConfig, verifier: VerifierConfig) -> Any:
    """The objective's default config, adapted to the planner's lengths, KL override and verifier noise."""
    name = RL_ALGOS.get(algo, PREF_ALGOS.get(algo))
    cfg = get_rl_objective(name).config()
    if hasattr(cfg, "surrogate"):
        s = cfg.surrogate
        if rl.kl_coef is not None:
            s = dataclasses.replace(s, kl_coef=rl.kl_coef)
        if s.agg is LossAgg.SEQ_MEAN_TOKEN_SUM_NORM:
            s = dataclasses.replace(s, norm_len=rl.max_new_tokens)
        cfg = dataclasses.replace(cfg, surrogate=s)
    if name == "dapo":
        cfg = dataclasses.replace(
            cfg, max_response_len=rl.max_new_tokens, overlong_buffer_len=max(1, rl.max_new_tokens // 4)
        )
    if name in ("pgbc", "pgfc"):  # see PGBCConfig / PGFCConfig for why these baselines
        default = AdvantageEstimator.NONE if name == "pgbc" else AdvantageEstimator.LEAVE_ONE_OUT
        estimator = default if rl.noise_baseline == "auto" else AdvantageEstimator(rl.noise_baseline)
        rates = {"fn_rate": verifier.fn_rate} | ({"fp_rate": verifier.fp_rate} if name == "pgbc" else {})
        cfg = dataclasses.replace(cfg, estimator=estimator, **rates)
    return cfg


def _pref_config(algo: str, pref: PrefConfig) -> Any:
    cfg = get_preference_objective(PREF_ALGOS[algo]).config()
    occupancy = OccupancyReg(coef=pref.chi2) if pref.chi2 > 0 else None
    if algo == "mpo":
        dpo = cfg.dpo if pref.beta is None else dataclasses.replace(cfg.dpo, beta=pref.beta)
        return dataclasses.replace(cfg, dpo=dataclasses.replace(dpo, occupancy=occupancy),
                                   easy_fraction=pref.mpo_easy_fraction)
    if pref.beta is not None and hasattr(cfg, "beta"):
        cfg = dataclasses.replace(cfg, beta=pref.beta)
    return dataclasses.replace(cfg, occupancy=occupancy)


def checkpoint_dir(path: str | Path) -> Path:
    """A run folder's checkpoint, or the folder itself if it is a checkpoint."""
    path = Path(path)
    if (path / CHECKPOINT / "config.json").is_file():
        return path / CHECKPOINT
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    raise FileNotFoundError(
        f"{path}: neither a planner run folder (with {CHECKPOINT}/) nor a model checkpoint folder (save_pretrained)"
    )


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class PlannerTrainer:
    """Owns model, tokenizer, tasks and verifier of one run; ``run()`` executes the configured phases."""

    def __init__(self, config: PlannerConfig, run_dir: Path | None = None,
                 reporter: PlannerReporter | None = None) -> None:
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.reporter = reporter or SilentPlannerReporter()
        self.device = torch.device(config.device)
        seed_everything(config.seed)
        self.train_tasks = sample_tasks(config.train_tasks, config.seed, config.task)
        self.eval_tasks = sample_tasks(config.eval_tasks, config.eval_seed, config.task)
        init = config.init or config.model.path
        self.fresh = not init
        if init:
            self.model, self.tokenizer = load_checkpoint(checkpoint_dir(init))
        else:
            self.tokenizer = train_tokenizer(corpus(self.train_tasks))
            self.model = build_model(config.model, self.tokenizer)
        self.model.to(self.device)
        tok = self.tokenizer
        self.pad_id, self.eos_id, self.bos_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
        self._prompt_cache: dict[int, list[int]] = {}
        self.rng = np.random.default_rng(config.seed + 1)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 2)
        self.verifier = Verifier(config.verifier, seed=config.seed + 3)
        self.step = 0
        self.writer: MetricsWriter | None = None
        self.history: list[dict[str, Any]] = []

    # -- encoding ---------------------------------------------------------------------------------
    def _prompt(self, task: PlannerTask) -> list[int]:
        key = id(task)
        if key not in self._prompt_cache:
            self._prompt_cache[key] = [self.bos_id, *encode(self.tokenizer, task.prompt)]
        return self._prompt_cache[key]

    def _batch(self, tasks: Sequence[PlannerTask], completions: Sequence[list[int]]) -> tuple[Tensor, ...]:
        p_ids, p_mask = left_pad([self._prompt(t) for t in tasks], self.pad_id, self.device)
        c_ids, c_mask = right_pad(list(completions), self.pad_id, self.device)
        return p_ids, p_mask, c_ids, c_mask

    def _updater(self, lr: float, clip: float) -> Updater:
        return Updater(self.model.parameters(), OptimConfig(lr=lr, grad_clip_norm=clip))

    # -- logging ----------------------------------------------------------------------------------
    def _log(self, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            self.writer.write(self.step, metrics)

    # -- SFT --------------------------------------------------------------------------------------
    def sft(self, steps: int | None = None) -> list[float]:
        """Teacher-forced NLL of the reference plan (and its end token), token mean. Returns the losses."""
        cfg = self.config.sft
        steps = cfg.steps if steps is None else steps
        if steps == 0:
            return []
        updater = self._updater(cfg.lr, 1.0)
        targets = {id(t): [*encode(self.tokenizer, t.reference_text()), self.eos_id] for t in self.train_tasks}
        losses, agg = [], MeanAggregator()
        self.model.train()
        self.reporter.phase("sft", steps)
        for i in range(steps):
            idx = self.rng.integers(len(self.train_tasks), size=cfg.batch_size)
            tasks = [self.train_tasks[j] for j in idx]
            p_ids, p_mask, c_ids, c_mask = self._batch(tasks, [targets[id(t)] for t in tasks])
            logp = completion_logprobs(self.model, p_ids, p_mask, c_ids, c_mask).logp
            loss = -(logp * c_mask).sum() / c_mask.sum()
            updater.update(loss)
            losses.append(float(loss.detach()))
            self.step += 1
            agg.add({"sft/loss": loss.detach()})
            if (i + 1) % self.config.log_every == 0 or i + 1 == steps:
                stats = agg.compute()
                self._log(stats)
                self.reporter.progress(i + 1, stats)
        return losses

    # -- sampling ---------------------------------------------------------------------------------
    def generate(self, task_indices: Sequence[int], group_size: int, first_group: int = 0) -> list[Row]:
        """G sampled completions of each task, verified."""
        rl = self.config.rl
        tasks = [self.train_tasks[i] for i in task_indices for _ in range(group_size)]
        p_ids, p_mask = left_pad([self._prompt(t) for t in tasks], self.pad_id, self.device)
        self.model.eval()
        out = sample(self.model, p_ids, p_mask, max_new_tokens=rl.max_new_tokens, eos_id=self.eos_id,
                     pad_id=self.pad_id, temperature=rl.temperature, generator=self.generator,
                     group_size=group_size)
        self.model.train()
        lengths = out.mask.sum(-1).tolist()
        ids = out.ids.tolist()
        truncated = out.truncated.tolist()
        completions = [row[:n] for row, n in zip(ids, lengths, strict=True)]
        texts = [decode(self.tokenizer, c) for c in completions]
        verdicts = self.verifier.score_many(tasks, texts, truncated)
        rows = []
        for k, (c, tr, v) in enumerate(zip(completions, truncated, verdicts, strict=True)):
            g = k // group_size
            rows.append(Row(task_indices[g], first_group + g, c, tr, v))
        return rows

    def _reward(self, algo: str, row: Row) -> float:
        if algo in BINARY_REWARD_ALGOS:
            return float(row.verdict.success)
        if algo == "fapo":
            return 1.0 if row.verdict.success else -1.0
        return row.verdict.reward

    def _rollout_rows(self, algo: str, dynamic: bool) -> list[Row]:
        rl = self.config.rl
        rows: list[Row] = []
        groups = 0
        for _attempt in range(rl.max_gen_batches if dynamic else 1):
            idx = self.rng.integers(len(self.train_tasks), size=rl.prompts_per_step).tolist()
            new = self.generate(idx, rl.group_size, first_group=groups)
            groups += rl.prompts_per_step
            if dynamic:  # keep only groups whose success is not all-equal (DAPO dynamic sampling)
                succ = torch.tensor([float(r.verdict.success) for r in new])
                gid = torch.tensor([r.group for r in new])
                informative = ~group_all_equal(succ, gid)
                new = [r for r, keep in zip(new, informative.tolist(), strict=True) if keep]
            rows.extend(new)
            if len({r.group for r in rows}) >= rl.prompts_per_step:
                break
        if dynamic:
            kept = sorted({r.group for r in rows})[: rl.prompts_per_step]
            rows = [r for r in rows if r.group in set(kept)]
        return rows

    # -- RL ---------------------------------------------------------------------------------------
    def rl(self, algo: str, steps: int, ref_model: Any | None = None,
           task_subset: Sequence[int] | None = None, phase: str | None = None) -> None:
        """``steps`` rollout batches of the objective ``algo`` (an RL_ALGOS key, or 'nft')."""
        rl = self.config.rl
        name = RL_ALGOS.get(algo, PREF_ALGOS.get(algo))
        objective = get_rl_objective(name)
        cfg = _objective_config(algo, rl, self.config.verifier)
        surrogate = getattr(cfg, "surrogate", None)
        kl_coef = surrogate.kl_coef if surrogate is not None else 0.0
        kl_in_reward = kl_coef > 0 and surrogate.kl_placement is KLPlacement.REWARD
        if kl_coef > 0 and ref_model is None:
            ref_model = self._frozen_copy()
        dynamic = bool(getattr(cfg, "dynamic_sampling", False)) or name == "nft"
        updater = self._updater(rl.lr, rl.grad_clip_norm)
        agg = MeanAggregator()
        self.reporter.phase(phase or algo, steps)
        saved_tasks = self.train_tasks
        if task_subset is not None and len(task_subset) > 0:
            self.train_tasks = [saved_tasks[i] for i in task_subset]
        try:
            for i in range(steps):
                t0 = time.perf_counter()
                rows = self._rollout_rows(algo, dynamic)
                gen_s = time.perf_counter() - t0
                metrics = self._rl_update(algo, name, objective, cfg, rows, updater, ref_model, kl_coef, kl_in_reward)
                metrics["perf/step_s"] = time.perf_counter() - t0
                metrics["perf/generate_s"] = gen_s
                metrics["perf/completion_tokens_per_s"] = sum(len(r.completion) for r in rows) / metrics["perf/step_s"]
                self.step += 1
                agg.add(metrics)
                self._after_step(i, steps, agg)
        finally:
            self.train_tasks = saved_tasks

    def _frozen_copy(self) -> Any:
        ref = copy.deepcopy(self.model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def _rl_update(self, algo: str, name: str, objective: Any, cfg: Any, rows: list[Row], updater: Updater,
                   ref_model: Any, kl_coef: float, kl_in_reward: bool) -> dict[str, Any]:
        rl = self.config.rl
        stats: dict[str, Any] = {}
        if rows:
            stats["train/success_rate"] = float(np.mean([r.verdict.true_success for r in rows]))
            stats["train/reported_success_rate"] = float(np.mean([r.verdict.success for r in rows]))
            stats["train/format_ok_rate"] = float(np.mean([r.verdict.format_ok for r in rows]))
            stats["train/completion_len"] = float(np.mean([len(r.completion) for r in rows]))
        if not rows:
            stats["train/skipped_steps"] = 1.0
            return stats
        tasks = [self.train_tasks[r.task] for r in rows]
        p_ids, p_mask, c_ids, c_mask = self._batch(tasks, [r.completion for r in rows])
        need_old = rl.epochs > 1 or name == "steer" or kl_in_reward
        logp_old = entropy_old = logp_ref = None
        with torch.no_grad():
            if need_old:
                old = completion_logprobs(self.model, p_ids, p_mask, c_ids, c_mask, with_entropy=name == "steer")
                logp_old, entropy_old = old.logp, old.entropy
            if kl_coef > 0:
                logp_ref = completion_logprobs(ref_model, p_ids, p_mask, c_ids, c_mask).logp
        rollout = Rollout(
            rewards=torch.tensor([self._reward(algo, r) for r in rows], device=self.device),
            group_ids=torch.tensor([r.group for r in rows], device=self.device),
            mask=c_mask,
            truncated=torch.tensor([r.truncated for r in rows], device=self.device),
            flawed=torch.tensor([r.verdict.flawed for r in rows], device=self.device),
            logp_old=logp_old,
            logp_ref=logp_ref,
        )
        adv = objective.advantages(cfg, rollout)
        keep = adv.keep
        stats |= {k: v for k, v in adv.metrics.items()}
        if not bool(keep.any()):
            stats["train/skipped_steps"] = 1.0
            return stats
        stats["train/skipped_steps"] = 0.0
        sel = lambda x: None if x is None else x[keep]  # noqa: E731
        p_ids, p_mask, c_ids, c_mask = p_ids[keep], p_mask[keep], c_ids[keep], c_mask[keep]
        values = adv.values[keep]
        for _epoch in range(rl.epochs):
            logp = completion_logprobs(self.model, p_ids, p_mask, c_ids, c_mask).logp
            batch = TokenBatch(
                logp=logp,
                logp_old=logp.detach() if logp_old is None else sel(logp_old),
                mask=c_mask,
                advantages=values,
                logp_ref=sel(logp_ref),
                entropy_old=sel(entropy_old),
                num_tokens_global=c_mask.sum(),
                num_seqs_global=float(c_mask.shape[0]),
            )
            loss, metrics = objective.loss(cfg, batch)
            grad_norm = updater.update(loss)
            stats |= metrics
            if grad_norm is not None:
                stats["train/grad_norm"] = grad_norm
        return stats

    def _after_step(self, i: int, steps: int, agg: MeanAggregator) -> None:
        every = self.config.eval_every
        if (i + 1) % self.config.log_every == 0 or i + 1 == steps:
            stats = agg.compute()
            self._log(stats)
            self.reporter.progress(i + 1, stats)
        if every and (i + 1) % every == 0 and i + 1 != steps:
            self.evaluate(record=True)

    # -- preference -------------------------------------------------------------------------------
    def pref(self, algo: str, steps: int) -> None:
        """``steps`` rounds: sample groups, pair best and worst, ``pref.inner_steps`` updates on the pairs."""
        if algo == "nft":  # a rollout objective: runs the RL loop with binary rewards
            self.rl("nft", steps)
            return
        pref = self.config.pref
        cfg = _pref_config(algo, pref)
        loss_fn = get_preference_objective(PREF_ALGOS[algo]).loss
        ref_model = self._frozen_copy()
        stage1_steps = steps // 2 if algo == "mpo" else steps
        updater = self._updater(pref.lr, self.config.rl.grad_clip_norm)
        agg = MeanAggregator()
        hard_tasks: list[int] = []
        self.reporter.phase(algo if algo != "mpo" else "mpo stage 1 (dpo)", stage1_steps)
        for i in range(stage1_steps):
            t0 = time.perf_counter()
            stats = self._pref_round(algo, cfg, loss_fn, updater, ref_model, hard_tasks)
            stats["perf/step_s"] = time.perf_counter() - t0
            self.step += 1
            agg.add(stats)
            self._after_step(i, stage1_steps, agg)
        if algo == "mpo" and steps > stage1_steps:
            # Stage 2: RL on the hard pairs' prompts, anchored (KL) to the stage-1 model.
            stage1 = self._frozen_copy()
            saved_kl = self.config.rl.kl_coef
            self.config.rl.kl_coef = saved_kl if saved_kl else 0.04
            try:
                self.rl("grpo", steps - stage1_steps, ref_model=stage1, task_subset=sorted(set(hard_tasks)),
                        phase="mpo stage 2 (grpo)")
            finally:
                self.config.rl.kl_coef = saved_kl

    def _pref_round(self, algo: str, cfg: Any, loss_fn: Any, updater: Updater, ref_model: Any,
                    hard_tasks: list[int]) -> dict[str, Any]:
        rl, pref = self.config.rl, self.config.pref
        idx = self.rng.integers(len(self.train_tasks), size=rl.prompts_per_step).tolist()
        rows = self.generate(idx, rl.group_size)
        stats: dict[str, Any] = {
            "train/success_rate": float(np.mean([r.verdict.true_success for r in rows])),
            "train/format_ok_rate": float(np.mean([r.verdict.format_ok for r in rows])),
        }
        chosen, rejected, gaps, pair_tasks = [], [], [], []
        for g in range(len(idx)):
            members = [r for r in rows if r.group == g]
            order = self.rng.permutation(len(members))  # random tie-breaking
            members = [members[k] for k in order]
            best = max(members, key=lambda r: r.verdict.reward)
            worst = min(members, key=lambda r: r.verdict.reward)
            best_tokens, best_reward = best.completion, best.verdict.reward
            if not best.verdict.success:
                # A well-formed failure (e.g. one lone "pick") is no plan to prefer: DPO and RPO drifted to
                # one-skill plans when such pairs were kept. Skip the group, or prefer the reference plan.
                if not pref.reference_fallback:
                    continue
                task = self.train_tasks[best.task]
                best_tokens, best_reward = [*encode(self.tokenizer, task.reference_text()), self.eos_id], 1.0
            if best_reward > worst.verdict.reward:
                chosen.append(best_tokens)
                rejected.append(worst.completion)
                gaps.append(best_reward - worst.verdict.reward)
                pair_tasks.append(best.task)
        stats["pref/pairs"] = float(len(chosen))
        if not chosen:
            stats["train/skipped_steps"] = 1.0
            return stats
        stats["train/skipped_steps"] = 0.0
        n = len(chosen)
        tasks = [self.train_tasks[t] for t in pair_tasks] * 2
        p_ids, p_mask, c_ids, c_mask = self._batch(tasks, chosen + rejected)
        with torch.no_grad():
            ref = completion_logprobs(ref_model, p_ids, p_mask, c_ids, c_mask).logp
            prev = completion_logprobs(self.model, p_ids, p_mask, c_ids, c_mask).logp if algo == "inpo" else None
        pair_mask = None
        if algo == "mpo":
            pair_mask = mpo_split(torch.tensor(gaps), cfg.easy_fraction).to(self.device)
            hard_tasks.extend(t for t, easy in zip(pair_tasks, pair_mask.tolist(), strict=True) if not easy)
        for _ in range(pref.inner_steps):
            logp = completion_logprobs(self.model, p_ids, p_mask, c_ids, c_mask).logp
            batch = PreferenceBatch(
                chosen_logp=logp[:n], chosen_mask=c_mask[:n], rejected_logp=logp[n:], rejected_mask=c_mask[n:],
                chosen_ref_logp=ref[:n], rejected_ref_logp=ref[n:],
                chosen_prev_logp=None if prev is None else prev[:n],
                rejected_prev_logp=None if prev is None else prev[n:],
                pair_mask=pair_mask,
            )
            loss, metrics = loss_fn(cfg, batch)
            updater.update(loss)
            stats |= metrics
        return stats

    # -- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, tasks: Sequence[PlannerTask] | None = None, record: bool = False,
                 batch_size: int = 128) -> dict[str, float]:
        """Greedy plans for the held-out tasks, scored by the exact verifier: success rate, plan length
        (skills, well-formed plans), format error rate, and the share of successes that are optimal.
        With ``eval_samples`` > 0 also the success rate of plans sampled at the rollout temperature (the
        quantity RL maximises), from a fixed generator so that every evaluation draws alike."""
        tasks = self.eval_tasks if tasks is None else tasks
        verdicts = self._plans(tasks, batch_size, greedy=True)
        ok = [v for v in verdicts if v.format_ok]
        wins = [v for v in verdicts if v.true_success]
        result = {
            "eval/success_rate": float(np.mean([v.true_success for v in verdicts])),
            "eval/format_error_rate": float(np.mean([not v.format_ok for v in verdicts])),
            "eval/plan_length": float(np.mean([v.n_steps for v in ok])) if ok else math.nan,
            "eval/optimal_share": float(np.mean([not v.flawed for v in wins])) if wins else math.nan,
        }
        if self.config.eval_samples > 0:
            repeated = [t for t in tasks for _ in range(self.config.eval_samples)]
            sampled = self._plans(repeated, batch_size, greedy=False)
            result["eval/sampled_success_rate"] = float(np.mean([v.true_success for v in sampled]))
        if record:
            self.history.append({"step": self.step, **result})
            self._log(result)
            self.reporter.message(
                f"eval @ {self.step}: success {result['eval/success_rate']:.0%}, "
                f"format errors {result['eval/format_error_rate']:.0%}"
            )
        return result

    def _plans(self, tasks: Sequence[PlannerTask], batch_size: int, greedy: bool) -> list[Verdict]:
        exact = Verifier(VerifierConfig(format_bonus=self.config.verifier.format_bonus))
        generator = torch.Generator(device=self.device).manual_seed(self.config.eval_seed)
        verdicts: list[Verdict] = []
        self.model.eval()
        for start in range(0, len(tasks), batch_size):
            chunk = tasks[start : start + batch_size]
            p_ids, p_mask = left_pad([self._prompt(t) for t in chunk], self.pad_id, self.device)
            out = sample(self.model, p_ids, p_mask, max_new_tokens=self.config.rl.max_new_tokens,
                         eos_id=self.eos_id, pad_id=self.pad_id, greedy=greedy,
                         temperature=self.config.rl.temperature, generator=generator)
            lengths = out.mask.sum(-1).tolist()
            texts = [decode(self.tokenizer, row[:n]) for row, n in zip(out.ids.tolist(), lengths, strict=True)]
            verdicts += exact.score_many(chunk, texts, out.truncated.tolist())
        self.model.train()
        return verdicts

    # -- the run ----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Execute the configured phases, save the checkpoint and the summary (when there is a run folder)."""
        cfg = self.config
        if self.run_dir is not None:
            self.writer = MetricsWriter(self.run_dir)
        t0 = time.perf_counter()
        try:
            if self.fresh or cfg.command == "sft":
                self.sft()
            start = self.evaluate(record=True)
            if cfg.command == "rl":
                self.rl(cfg.algo, cfg.rl.steps)
            elif cfg.command == "pref":
                self.pref(cfg.algo, cfg.rl.steps)
            final = self.evaluate(record=True) if cfg.command != "sft" else start
        finally:
            if self.writer is not None:
                self.writer.close()
            self.reporter.finish()
        summary = {
            "command": cfg.command,
            "algo": cfg.algo,
            "seed": cfg.seed,
            "steps": self.step,
            "wall_s": time.perf_counter() - t0,
            "start": start,
            "final": final,
            "evals": self.history,
        }
        if self.run_dir is not None:
            with atomic_directory(self.run_dir / CHECKPOINT) as tmp:
                save_checkpoint(self.model, self.tokenizer, tmp)
            atomic_write_text(self.run_dir / "eval_summary.json", json.dumps(summary, indent=2) + "\n")
        return summary
