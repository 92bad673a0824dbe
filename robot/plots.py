"""Learning-curve figure from a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from robot.core.metrics import read_metrics


def plot_learning_curve(run_dir: Path, title: str = "") -> Path:
    """Write curve.png: eval success rate (and training success) against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir)
    evals = [(r["step"], r["eval/success_rate"]) for r in rows if r.get("eval/success_rate") is not None]
    train = [(r["step"], r["train/success_rate"]) for r in rows if r.get("train/success_rate") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), color="0.6", label="train (last 20 episodes)")
    if evals:
        ax.plot(*zip(*evals, strict=True), "o-", color="C0", label="eval (deterministic)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or Path(run_dir).name, fontsize=9)
    fig.tight_layout()
    out = Path(run_dir) / "curve.png"
    fig.savefig(out)
    plt.close(fig)
    return out
