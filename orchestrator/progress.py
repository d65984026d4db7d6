"""The one progress helper: live bars for rounds, tasks and trials, plus the console for summaries.

Bars draw on stderr with rich when it is a terminal; in a log (CI, `ray job submit`) each bar
writes a plain line at most every 10 % so that a long run still shows where it is.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()               # stdout: results tables and the final summary
_err = Console(stderr=True)       # stderr: live bars
log = logging.getLogger("orchestrator.progress")


class _PlainBar:
    """A bar for non-terminals: one log line per 10 % step."""

    def __init__(self, total: int, description: str):
        self.total, self.description, self.done, self._next = max(total, 1), description, 0, 0.1

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.done / self.total >= self._next - 1e-9 or self.done == self.total:
            _err.print(f"{self.description}: {self.done}/{self.total}", highlight=False)
            while self._next <= self.done / self.total:
                self._next += 0.1


class _RichBar:
    def __init__(self, progress: Progress, task: int):
        self._progress, self._task = progress, task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextlib.contextmanager
def progress(total: int, description: str) -> Iterator[_RichBar | _PlainBar]:
    """`with progress(n, "rounds") as bar: ... bar.advance()`."""
    if not _err.is_terminal:
        yield _PlainBar(total, description)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=False) as bar:
        yield _RichBar(bar, bar.add_task(description, total=total))


def setup_logging(verbose: bool = False) -> None:
    """Our logs at INFO (DEBUG with -v); the libraries' chatter at WARNING."""
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("ray", "mlflow", "alembic", "urllib3", "filelock", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
