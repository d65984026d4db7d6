"""A real OpenAI-compatible server for the HTTP backend's tests: `transformers serve` on 127.0.0.1.

The server serves a tiny random Llama saved to a temporary folder with the shipped SmolLM2
tokenizer and a ChatML chat template (no hub access: HF_HUB_OFFLINE=1). It writes its access log
to a file, one line per request, which is how the tests count the model calls the server saw.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import stop_process

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
READY_TIMEOUT_S = 120


def save_tiny_llama(folder: Path) -> Path:
    """The shared tiny Llama (random, seed 0) + the shipped tokenizer, HF layout."""
    from workloads.common.tiny_lm import build_tiny_llama
    from workloads.common.tokenizer import load_tokenizer

    build_tiny_llama(seed=0).save_pretrained(str(folder))
    load_tokenizer().save_pretrained(str(folder))
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": CHATML}))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base_url: str
    model: str
    log: Path

    def requests(self, path: str = "/v1/chat/completions") -> int:
        """Requests the server answered on `path`, from its access log."""
        return self.log.read_text().count(f'"POST {path} HTTP/1.1" 200')

    def wait_for_requests(self, expected: int, timeout_s: float = 5.0) -> int:
        """The request count, once it reaches `expected` or stops changing (log lines trail)."""
        deadline = time.time() + timeout_s
        while self.requests() < expected and time.time() < deadline:
            time.sleep(0.1)
        return self.requests()


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + READY_TIMEOUT_S
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"transformers serve exited {proc.returncode}:\n"
                               + log.read_text()[-3000:])
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"transformers serve not ready after {READY_TIMEOUT_S}s:\n"
                       + log.read_text()[-3000:])


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory):
    """`transformers serve <tiny model>` bound to 127.0.0.1; always stopped at teardown."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs its extras: pip install 'transformers[serving]'")
    root = tmp_path_factory.mktemp("openai_server")
    model = save_tiny_llama(root / "tiny-llama")
    port, log = _free_port(), root / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(root / "hub"),
           "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model),
             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
             "--log-level", "info"], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc, log)
        yield Server(base_url=base + "/v1", model=str(model), log=log)
    finally:
        stop_process(proc)
