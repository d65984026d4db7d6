"""Every verb as a person types it in a terminal: the real CLI on a pseudo-terminal.

CI has no terminal, so what happens only on a TTY (rich's live bars, log records printed beside
them) is exercised nowhere else: a sweep died before its first trial because the live bar sat in
a Tune callback that Tune pickles, and log records were printed into the bar's line. Each test runs
`python -m orchestrator ...` with the pty's slave as stdin, stdout and stderr, in a scratch
directory (MLflow store and state there, never in the repo), on configs shrunk to seconds, and
reads back what the terminal received.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

EXPERIMENTS = REPO / "experiments"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]"           # colours, cursor moves, line erases
                  r"|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"   # titles, hyperlinks
                  r"|\x1b[()][A-Z0-9]|\x1b[=>]")
# one frame of a live bar: description, bar, done/total, elapsed; nothing before or after it
BAR = re.compile(r"(?P<desc>\S.*?) [━╸╺]+ +(?P<done>\d+)/(?P<total>\d+) "
                 r"(?P<elapsed>\d+:\d\d:\d\d)")
BAR_FRAGMENT = re.compile(r"[━╸╺]{3,}.*\d+/\d+")
# one model type on 4 devices, 2 experts, one step per phase: the phases still all run
DEEPFUSION = ["deepfusion.data.max_records=400", "deepfusion.models.device_models=[gpt2]",
              "deepfusion.federation.num_devices=4", "deepfusion.moe.num_experts=2",
              "deepfusion.local.steps=1", "deepfusion.distill.steps=1", "deepfusion.moe.steps=1",
              "deepfusion.run.eval_blocks=8"]
TINY = {
    "aeria": ["aeria.user_counts=[100,300]", "aeria.num_seeds=1", "aeria.property_users=60",
              "aeria.property_probes=2"],
    "prince": ["prince.federation.num_devices=8", "prince.training.rounds=1",
               "prince.training.methods=[prince]", "prince.tenants.bert.enabled=false",
               "prince.tenants.whisper.enabled=false", "prince.tenants.llama.enabled=false",
               "prince.tenants.vit.train_limit=200", "prince.tenants.vit.test_limit=32",
               "prince.market.price_points=6"],
    # DeepFusion only, its Phase III in one Ray task (run.phase3=ray_task): the expert-parallel
    # Ray Train + DeepSpeed group and the five baselines are what cost minutes
    "deepfusion": [*DEEPFUSION, "deepfusion.run.methods=[deepfusion]",
                   "deepfusion.run.phase3=ray_task"],
    "robustness": ["robustness.models=[{name: ChatGPT, kind: stored}, {name: tiny, "
                   "kind: generative, path: tiny, max_examples: 2, batch_size: 2}]",
                   "robustness.decoding.translation_max_new_tokens=8"],
}
TINY_SWEEP = {
    "aeria": ["sweep.num_samples=1", "sweep.batch_size=2", "aeria.num_users=200"],
    # sweep.yaml rechecks its pick by training (sweep.recheck: 1): ViT alone, one round, the two
    # methods the sweep's metric compares
    "prince": ["sweep.num_samples=1", *TINY["prince"],
               "prince.training.methods=[prince,uniform_price]"],
    "deepfusion": [*DEEPFUSION, "sweep.num_samples=1"],  # sweep.yaml: deepfusion only, no EP
    # the sweep tunes the first model: the tiny random one, in the trial's process (workers: 0)
    "robustness": ["robustness.models=[{name: tiny, kind: generative, path: tiny, "
                   "max_examples: 2, workers: 0, batch_size: 2}]",
                   "robustness.tasks=[advglue_sst2]",
                   "sweep.num_samples=2"],
}


@dataclass
class Screen:
    """What a terminal received: exit status and the text without colours and cursor moves."""

    status: int
    text: str
    session: int = 0  # the session (and process group) it ran in: its Ray processes too

    @property
    def lines(self) -> list[str]:
        """Every line and every redraw of a line (rich redraws a bar after a carriage return)."""
        return [line for line in re.split(r"\r\n|\r|\n", self.text) if line.strip()]

    @property
    def frames(self) -> list[re.Match]:
        return [m for m in map(BAR.fullmatch, self.lines) if m]

    def finished(self, description: str) -> bool:
        return any(f["desc"] == description and f["done"] == f["total"] != "0"
                   for f in self.frames)


def in_terminal(argv: list[str], cwd: Path, timeout_s: float = 300,
                interrupt_on: re.Pattern | None = None) -> Screen:
    """Run `argv` with a 120x40 pseudo-terminal as its stdin, stdout and stderr, as a shell
    would, and collect everything the terminal receives until the program exits. With
    `interrupt_on`, press Ctrl-C (SIGINT to the foreground process group) once the screen
    shows it."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in (
        "COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
        "MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(TERM="xterm-256color", PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            start_new_session=True)
    os.close(slave)
    out, deadline, exited = bytearray(), time.monotonic() + timeout_s, None
    pressed = interrupt_on is None
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 1 << 16)
                except OSError:  # EIO: every process holding the slave has closed it
                    break
                if not chunk:
                    break
                out += chunk
                if not pressed and interrupt_on.search(_plain(out)):
                    os.killpg(proc.pid, signal.SIGINT)
                    pressed = True
            elif proc.poll() is not None:
                exited = exited or time.monotonic()
                if time.monotonic() - exited > 2:  # a leftover child holds the slave: stop reading
                    break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                raise AssertionError(f"{argv} ran past {timeout_s}s:\n" + _plain(out)[-3000:])
    finally:
        os.close(master)
    return Screen(proc.wait(timeout=30), _plain(out), proc.pid)


def _plain(raw: bytes) -> str:
    return ANSI.sub("", raw.decode("utf-8", "replace"))


def orchestrator(*args: str, cwd: Path) -> Screen:
    """`python -m orchestrator ARGS` typed in a terminal, its MLflow store and state in `cwd`."""
    return in_terminal([sys.executable, "-m", "orchestrator", *args], cwd)


def scratch(tmp: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", f"state_dir={tmp / 'state'}"]


def assert_clean(screen: Screen) -> None:
    """Exit 0, no traceback, and every bar frame on a line of its own (no log record glued)."""
    assert screen.status == 0, screen.text[-4000:]
    assert "Traceback" not in screen.text, screen.text[-4000:]
    glued = [line for line in screen.lines if BAR_FRAGMENT.search(line) and not BAR.fullmatch(line)]
    assert not glued, f"text printed into a live bar's line: {glued[:3]}"


@pytest.fixture(scope="module")
def aeria_run(tmp_path_factory) -> tuple[Path, Screen]:
    """One aeria quickstart run, which `compare` then reads back from the same store."""
    tmp = tmp_path_factory.mktemp("aeria_run")
    return tmp, orchestrator("run", str(EXPERIMENTS / "aeria" / "quickstart.yaml"), "seed=3",
                             *TINY["aeria"], *scratch(tmp), cwd=tmp)


# --------------------------------------------------------------------------- run and sweep
@pytest.mark.slow
def test_aeria_run_under_a_terminal_draws_its_bars_to_the_end(aeria_run):
    _, screen = aeria_run
    assert_clean(screen)
    assert screen.finished("aeria markets") and screen.finished("logging mechanisms")


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["prince", "deepfusion", "robustness"])
def test_run_under_a_terminal_finishes_and_draws_a_bar(workload, tmp_path):
    screen = orchestrator("run", str(EXPERIMENTS / workload / "quickstart.yaml"), *TINY[workload],
                          *scratch(tmp_path), cwd=tmp_path)
    assert_clean(screen)
    assert any(f["done"] == f["total"] != "0" for f in screen.frames), \
        f"no live bar reached its end:\n{screen.text[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("workload", ["aeria", "prince", "deepfusion", "robustness"])
def test_sweep_under_a_terminal_runs_its_trials_and_the_bar_counts_them(workload, tmp_path):
    """The live bar must stay out of what Tune pickles (it died with `cannot pickle RLock`)."""
    screen = orchestrator("sweep", str(EXPERIMENTS / workload / "sweep.yaml"),
                          *TINY_SWEEP[workload], *scratch(tmp_path), cwd=tmp_path)
    assert_clean(screen)
    assert screen.finished("trials"), f"the bar did not count every trial:\n{screen.text[-3000:]}"
    if workload == "prince":  # sweep.yaml trains its pick for real after the search
        assert "recheck 1: trial" in screen.text, screen.text[-3000:]


# --------------------------------------------------------------------------- the other verbs
@pytest.mark.slow
def test_compare_under_a_terminal_shows_the_latest_run_by_its_name(aeria_run):
    tmp, run = aeria_run
    assert run.status == 0
    screen = orchestrator("compare", "aeria-quickstart", "--tracking-uri",
                          f"sqlite:///{tmp / 'mlflow.db'}", cwd=tmp)
    assert_clean(screen)
    assert re.search(r"parent run quickstart-run \d{4}-\d\d-\d\d \d\d:\d\d seed=3 aeria",
                     screen.text), "the parent's name carries its time and overrides"
    assert "revenue_mean" in screen.text and (tmp / "compare_aeria-quickstart.csv").is_file()


def test_validate_under_a_terminal_says_ok(tmp_path):
    screen = orchestrator("validate", str(EXPERIMENTS / "prince" / "paper.yaml"),
                          *scratch(tmp_path), cwd=tmp_path)
    assert_clean(screen)
    assert "ok: " in screen.text and "valid 'prince' experiment" in screen.text


def test_list_under_a_terminal_names_every_workload(tmp_path):
    screen = orchestrator("list", cwd=tmp_path)
    assert_clean(screen)
    for name in ("aeria", "deepfusion", "prince", "robustness"):
        assert f"experiments/{name}/quickstart.yaml" in screen.text


@pytest.mark.slow
def test_ctrl_c_ends_a_run_with_one_line_exit_130_its_runs_killed_and_no_ray_left(tmp_path):
    from mlflow import MlflowClient

    from orchestrator.tracking import ROLE_TAG

    screen = in_terminal([sys.executable, "-m", "orchestrator", "run",
                          str(EXPERIMENTS / "fedprox" / "quickstart.yaml"), *scratch(tmp_path)],
                         tmp_path, interrupt_on=BAR_FRAGMENT)
    assert screen.status == 130, screen.text[-3000:]
    assert "Traceback" not in screen.text, screen.text[-3000:]
    assert screen.lines[-1].startswith("interrupted: any MLflow run it had open is marked KILLED")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == "parent"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert all(r.info.status != "RUNNING" for r in runs)
    time.sleep(3)
    ps = subprocess.run(["ps", "-eo", "sid=,args="], capture_output=True, text=True).stdout
    left = [line for line in ps.splitlines() if line.split()[0] == str(screen.session)]
    assert not left, f"processes of the interrupted run still alive: {left}"


# --------------------------------------------------------------------------- the bar itself
LIVE_BAR_SCRIPT = textwrap.dedent("""
    import logging, time
    from orchestrator.progress import progress, setup_logging

    setup_logging()
    with progress(2, "steps") as bar:
        bar.advance()
        logging.getLogger("orchestrator.demo").info("a record while the bar is live")
        time.sleep(1.6)
        bar.advance()
""")


def test_a_log_record_prints_above_the_live_bar_and_the_elapsed_time_moves(tmp_path):
    """A record on its own line (not glued to a bar frame), and frames drawn while the step
    blocks show the elapsed time past 0:00:00 (the bar refreshes on its own)."""
    screen = in_terminal([sys.executable, "-c", LIVE_BAR_SCRIPT], tmp_path, timeout_s=60)
    assert_clean(screen)
    assert "INFO orchestrator.demo: a record while the bar is live" in screen.lines
    assert any(f["done"] == "1" and f["elapsed"] != "0:00:00" for f in screen.frames), \
        f"no frame was drawn during the 1.6 s step:\n{screen.lines}"


@pytest.mark.slow
def test_reproduce_under_a_terminal_draws_its_bars_and_shows_every_claims_verdict(tmp_path):
    screen = orchestrator("reproduce", "fedprox", "seeds=2", "fedprox.federation.rounds=2",
                          "fedprox.train_digits=400", "fedprox.federation.num_devices=4",
                          *scratch(tmp_path), cwd=tmp_path)
    assert_clean(screen)
    # each seed's bars say whose they are
    assert screen.finished("seed 0 · fedprox rounds") and screen.finished("seed 1 · fedavg rounds")
    claims = screen.text[screen.text.index("the paper's claims"):]
    assert "verdict" in claims and "95% interval" in claims, "no column cropped at 120 columns"
    assert "reproduced" in claims or "direction" in claims or "undetermined" in claims, claims
