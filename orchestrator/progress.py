"""The one progress helper: live bars for rounds, tasks and trials, plus the console for summaries.

Bars draw on stderr with rich when it is a terminal; in a log (CI, `ray job submit`) each bar
writes a plain line at most every 10 % so that a long run still shows where it is.

On a terminal, log records are written through the same console as the bars (`setup_logging`):
rich then prints each record above a live bar and redraws the bar below it. A handler that wrote
to stderr itself would put the record after the bar's last frame, on the bar's own line, and
leave that frame (its elapsed time frozen) behind in the scrollback for every record.
The bars refresh on their own (rich's refresh thread, 10 times a second), so the elapsed column
moves while the driver waits (a `ray.get`, a `ray.wait`, a Tune loop).
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Iterator

from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

console = Console()               # stdout: results tables and the final summary
_err = Console(stderr=True)       # stderr: live bars, and log records on a terminal
log = logging.getLogger("orchestrator.progress")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


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
    """One task of a live rich `Progress`; it holds a refresh thread and locks, so it cannot be
    pickled: whatever Ray or Tune pickles (a Tune callback, a task's arguments) must not hold it."""

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=_err, transient=False, auto_refresh=True) as bar:
        yield _RichBar(bar, bar.add_task(description, total=total))


def _labelled_progress(label: str, total: int, description: str):
    return progress(total, f"{label} · {description}")


def labelled(label: str):
    """`progress` whose bars begin with `label` ('seed 1', 'case=medical seed 2'): in a run of
    several seeds or grid settings every bar says whose it is."""
    import functools

    return functools.partial(_labelled_progress, label) if label else progress


class _ConsoleHandler(logging.Handler):
    """Writes records through the stderr console, so that they print above a live bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _err.print(self.format(record), markup=False, highlight=False, emoji=False,
                       soft_wrap=True)
        except Exception:  # noqa: BLE001 (logging's contract: report, never raise)
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    """Our logs at INFO (DEBUG with -v); the libraries' chatter at WARNING. On a terminal the
    records go through the bars' console; elsewhere (CI, `ray job submit`) to stderr as plain
    lines."""
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    handler = _ConsoleHandler() if _err.is_terminal else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("ray", "mlflow", "alembic", "urllib3", "filelock", "matplotlib", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
