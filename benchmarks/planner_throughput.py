"""GRPO step throughput of the planner trainer vs TRL's GRPOTrainer, same model, same work, same process, CPU.

Both start from the same weights (a briefly SFT-trained planner: realistic completion lengths), get the
same prompts (planner tasks), group size G, prompts per step, completion limit, temperature 1, no KL
(TRL's default beta = 0, so neither needs a reference model), one optimizer step per rollout batch, no
vLLM, fp32, no gradient checkpointing, and a verifier reward (the exact symbolic verifier for both).
Throughput = completion tokens generated per second of whole training steps (sampling + scoring +
log-probs + backward + Adam), after one warm-up step each. The two trainers alternate in rounds so
background load hits both alike.

    python -m benchmarks.planner_throughput [--steps 6] [--rounds 2] [--prompts 8] [--group 8]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from policies.planner.data import sample_tasks
from policies.planner.model import save_checkpoint
from policies.planner.trainer import PlannerConfig, PlannerTrainer
from policies.planner.verifier import Verifier


def _sft_start(seed: int, sft_steps: int, folder: str) -> str:
    cfg = PlannerConfig(command="sft", seed=seed, train_tasks=500, eval_tasks=8)
    cfg.sft.steps, cfg.sft.batch_size = sft_steps, 16
    trainer = PlannerTrainer(cfg)
    trainer.sft()
    path = os.path.join(folder, "sft")
    save_checkpoint(trainer.model, trainer.tokenizer, path)
    return path


def _ours(init: str, args) -> PlannerTrainer:
    cfg = PlannerConfig(command="rl", algo="grpo", init=init, train_tasks=500, eval_tasks=8, seed=args.seed)
    cfg.rl.prompts_per_step, cfg.rl.group_size = args.prompts, args.group
    cfg.rl.max_new_tokens, cfg.rl.kl_coef, cfg.rl.lr = args.max_new_tokens, 0.0, 1e-4
    return PlannerTrainer(cfg)


def time_ours(trainer: PlannerTrainer, steps: int) -> tuple[float, int]:
    """Seconds and completion tokens of ``steps`` GRPO steps."""
    tokens = 0
    original = trainer.generate

    def counting(*a, **kw):
        nonlocal tokens
        rows = original(*a, **kw)
        tokens += sum(len(r.completion) for r in rows)
        return rows

    trainer.generate = counting
    t0 = time.perf_counter()
    trainer.rl("grpo", steps)
    seconds = time.perf_counter() - t0
    trainer.generate = original
    return seconds, tokens


class _TRLRun:
    """TRL's GRPOTrainer on a copy of the same model; ``run(steps)`` trains 1 + steps steps with
    ``trainer.train()`` and times the last ``steps`` (the first, with TRL's set-up, is a warm-up)."""

    def __init__(self, model, tokenizer, tasks, args, folder: str) -> None:
        self.model, self.tokenizer, self.args, self.folder = model, tokenizer, args, folder
        self.by_prompt = {f"{tokenizer.bos_token} {t.prompt}": t for t in tasks}
        self.verifier = Verifier()

    def run(self, steps: int) -> tuple[float, int]:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer

        args, by_prompt = self.args, self.by_prompt
        step_tokens: list[int] = []
        spans: list[float] = []

        def reward(prompts, completions, completion_ids, **_):
            step_tokens.append(sum(len(c) for c in completion_ids))
            return [self.verifier.score(by_prompt[p], c).reward for p, c in zip(prompts, completions, strict=True)]

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, *a, **kw):
                spans.append(time.perf_counter() - self.t0)

        config = GRPOConfig(
            output_dir=os.path.join(self.folder, "trl"), per_device_train_batch_size=args.prompts * args.group,
            num_generations=args.group, max_completion_length=args.max_new_tokens, temperature=1.0,
            learning_rate=1e-4, beta=0.0, use_cpu=True, bf16=False, gradient_checkpointing=False,
            max_steps=steps + 1, logging_steps=10_000, save_strategy="no", report_to="none", seed=args.seed,
            disable_tqdm=True, dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(model=self.model, reward_funcs=reward, args=config,
                              train_dataset=Dataset.from_dict({"prompt": list(by_prompt)}),
                              processing_class=self.tokenizer, callbacks=[Clock()])
        trainer.train()
        if len(spans) != steps + 1 or len(step_tokens) != steps + 1:
            raise RuntimeError(f"TRL ran {len(spans)} steps with {len(step_tokens)} reward calls; expected {steps + 1}")
        return sum(spans[1:]), sum(step_tokens[1:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per trainer per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=56)
    parser.add_argument("--sft_steps", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    console = Console()
    with tempfile.TemporaryDirectory() as folder:
        init = _sft_start(args.seed, args.sft_steps, folder)
        ours = _ours(init, args)
        tasks = sample_tasks(500, args.seed, ours.config.task)
        trl = _TRLRun(copy.deepcopy(ours.model), ours.tokenizer, tasks, args, folder)
        time_ours(ours, 1)  # warm-up (TRL's is inside each run)
        totals = {"ours": [0.0, 0], "trl": [0.0, 0]}
        for _ in range(args.rounds):
            for name, fn in (("ours", lambda: time_ours(ours, args.steps)), ("trl", lambda: trl.run(args.steps))):
                s, n = fn()
                totals[name][0] += s
                totals[name][1] += n
    rate = {k: n / s for k, (s, n) in totals.items()}
    step_s = {k: s / (args.rounds * args.steps) for k, (s, _) in totals.items()}
    ratio = rate["ours"] / rate["trl"]
    table = Table(title=f"GRPO step throughput, {args.prompts} prompts x G={args.group}, "
                        f"<= {args.max_new_tokens} completion tokens, CPU", title_justify="left")
    for col in ("trainer", "completion tokens/s", "s / step", "tokens / step"):
        table.add_column(col)
    for k, label in (("ours", "robot-stack planner"), ("trl", "TRL GRPOTrainer")):
        table.add_row(label, f"{rate[k]:.0f}", f"{step_s[k]:.2f}",
                      f"{totals[k][1] / (args.rounds * args.steps):.0f}")
    console.print(table)
    console.print(f"ratio vs TRL: {ratio:.2f}x")
    write_result(
        "planner_throughput",
        {"ratio_vs_trl": round(ratio, 3), "ours_tokens_per_s": round(rate["ours"], 1),
         "trl_tokens_per_s": round(rate["trl"], 1)},
        "python -m benchmarks.planner_throughput " + " ".join(sys.argv[1:] if argv is None else argv),
        step_s=step_s, config=vars(args),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
