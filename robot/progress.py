"""Terminal output for the CLI: a rich progress bar for training and summary tables."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class RichReporter:
    """Progress bar with env steps/s, updates/s, success rate and return of recent episodes."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self._progress: Progress | None = None
        self._task = None

    def start(self, total_steps: int, start_step: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TextColumn("{task.fields[episodes]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, rates="", episodes="")

    def progress(self, step: int, stats: dict[str, float]) -> None:
        if self._progress is None or step % 50:
            return
        rates = f"{stats.get('perf/env_steps_per_s', 0):.0f} steps/s {stats.get('perf/updates_per_s', 0):.0f} upd/s"
        episodes = ""
        if "train/success_rate" in stats:
            episodes = f"success {stats['train/success_rate']:.0%} return {stats['train/return']:.2f}"
        self._progress.update(self._task, completed=step, rates=rates, episodes=episodes)

    def message(self, text: str) -> None:
        (self._progress.console if self._progress else self.console).print(text)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def key_value_table(title: str, rows: dict[str, object]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, _fmt(value))
    return table


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)
