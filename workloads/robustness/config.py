"""Every knob of the robustness workload: which tasks, which models, how they are prompted.

A model is one backend (see `backends.py`): `stored` (the authors' ChatGPT answers), `generative`
(a local causal or seq2seq LM, prompted as the paper prompts Hugging Face models), `zero_shot` (a
local NLI model in the zero-shot-classification pipeline, as the paper ran DeBERTa-L and BART-L),
`classifier` (a local fine-tuned sequence classifier, e.g. our MiniLM baseline) or `http` (an
OpenAI-compatible endpoint). Secrets never enter the config: `api_key_env` names the environment
variable that holds the key, and the key is read from the environment when the run starts.
"""
from __future__ import annotations

import csv
import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator import checks
from orchestrator.config import ConfigError, knob, text_problem
from workloads.robustness import backends
from workloads.robustness.stored import ANSWER_COLUMNS
from workloads.robustness.tasks import TASKS, RENDER_STYLES

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")   # an env var NAME, by convention upper-case
ZH_TOKENIZERS = ("auto", "jieba", "char")


@dataclass
class ModelConfig:
    """One model row of the paper's tables: a backend, where its weights or answers are, resources."""

    name: str = knob("", "row name in the tables and prefix of its child runs, e.g. 'ChatGPT'")
    kind: str = knob("stored", "backend", choices=backends.KINDS)
    path: str = knob("", "generative/zero_shot/classifier: a local model folder, or a built-in: "
                         f"{', '.join(backends.BUILTIN_PATHS)}")
    gguf_file: str = knob("", "GGUF file inside `path` (a folder holding one .gguf)")
    answer_column: str = knob("label", "stored: the authors' cleaned 'label' or the raw "
                                       "'pred_label' answers", choices=ANSWER_COLUMNS)
    base_url: str = knob("", "http: the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    model: str = knob("", "http: the model name sent with each request")
    endpoint: str = knob("chat", "http: /chat/completions or /completions",
                         choices=backends.ENDPOINTS)
    api_key_env: str = knob("", "http: NAME of the environment variable holding the API key "
                                "(never the key itself); empty: no Authorization header")
    request_timeout_s: float = knob(120.0, "http: seconds one request may take", gt=0)
    retries: int = knob(2, "http: retries of a request that failed with 5xx or no connection",
                        ge=0)
    concurrency: int = knob(4, "http: requests in flight per worker", ge=1)
    prompt_style: str = knob("", "how the prompt is assembled (tasks.Task.render); empty: the "
                                 "paper's for this kind", choices=("",) + RENDER_STYLES)
    tasks: list[str] = knob([], "tasks this model runs (those also in robustness.tasks); "
                                "empty: every task of robustness.tasks its backend can do",
                            choices=tuple(TASKS))
    max_examples: Optional[int] = knob(None, "evaluate a seeded random subset of this many "
                                             "examples per task; null: all", ge=1)
    workers: Optional[int] = knob(None, "Ray actors, each loading the model once; 0: in the "
                                        "driver; null: 0 for stored, else 1", ge=0)
    num_cpus: Optional[float] = knob(None, "CPUs per worker; null: 0 for stored/http, else 1",
                                     ge=0)
    num_gpus: float = knob(0.0, "GPUs per worker (local models run on CUDA when > 0)", ge=0)
    batch_size: int = knob(8, "examples per call to a worker (and per flush of predictions)",
                           ge=1)
    optional: bool = knob(False, "skip this model, with a warning, when the package holding its "
                                 "built-in weights is not installed")

    def validate(self) -> None:
        if not self.name.strip():
            raise ConfigError("name", "is empty", "name the model, e.g. name: ChatGPT")
        if self.kind in backends.LOCAL_KINDS:
            self._validate_local()
        if self.kind == "http":
            self._validate_http()
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"has duplicates: {self.tasks}", "list each task once")
        for i, name in enumerate(self.tasks):
            why = backends.unsupported(self, TASKS[name])
            if why:
                raise ConfigError(f"tasks[{i}]", f"'{name}' cannot run on this model: {why}",
                                  "drop it, or leave tasks empty to take the supported ones")

    def _validate_local(self) -> None:
        if not self.path:
            raise ConfigError("path", f"a {self.kind} model needs a path",
                              f"a local folder or one of: {', '.join(backends.BUILTIN_PATHS)}")
        if self.path in backends.BUILTIN_PATHS:
            missing = backends.missing_package(self.path, self.kind)
            if missing and not self.optional:
                raise ConfigError("path", missing, "or set optional: true to skip this model")
        elif not Path(self.path).expanduser().exists():
            raise ConfigError("path", f"no model folder at {self.path}",
                              f"a local folder or one of: {', '.join(backends.BUILTIN_PATHS)}")
        else:  # local_models reads gguf_file for generative models only
            gguf = self.gguf_file if self.kind == "generative" else ""
            checks.hf_model_folder("path", self.path, gguf, "gguf_file")

    def _validate_http(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url", f"'{self.base_url}' is not an http(s) URL",
                              "e.g. http://127.0.0.1:8000/v1")
        if not self.model:
            raise ConfigError("model", "an http model needs the served model's name")
        # the messages never echo the value: a key pasted here by mistake stays off the console
        if self.api_key_env and not ENV_NAME.match(self.api_key_env):
            raise ConfigError("api_key_env", "must be the NAME of an environment variable "
                              "(A-Z, 0-9, _), not a key", "e.g. api_key_env: OPENAI_API_KEY")
        if self.api_key_env and self.api_key_env not in os.environ:
            raise ConfigError("api_key_env", "the environment variable it names is not set",
                              "export it before the run")

    @property
    def n_workers(self) -> int:
        return self.workers if self.workers is not None else (0 if self.kind == "stored" else 1)

    @property
    def cpus(self) -> float:
        if self.num_cpus is not None:
            return self.num_cpus
        return 0.0 if self.kind in ("stored", "http") else 1.0


@dataclass
class PromptConfig:
    """Prompt variants for sweeps; the defaults are the paper's."""

    variant: int = knob(-1, "which prompt of each task's PROMPT_SET list: -1 the paper's (the "
                            "last), 0 the first (sst2 and ddxplus have two; others keep theirs)")
    style: str = knob("", "prompt assembly for every generative/http model; empty: each model's",
                      choices=("",) + RENDER_STYLES)
    chat_template: bool = knob(False, "generative: wrap the prompt in the tokenizer's chat "
                                      "template (the paper sends raw text)")


@dataclass
class DecodingConfig:
    """Generation settings of generative and http models (the paper: greedy, 10 new tokens)."""

    max_new_tokens: int = knob(10, "tokens generated for a classification answer [PAPER: 10]",
                               ge=1)
    translation_max_new_tokens: int = knob(96, "tokens generated for a translation [PAPER: 256]",
                                           ge=1)
    temperature: float = knob(0.0, "0: greedy [PAPER for classification]; > 0: sampling", ge=0)
    top_p: float = knob(1.0, "nucleus sampling mass when temperature > 0", gt=0, le=1)


@dataclass
class FinetuneConfig:
    """The MiniLM classifier baseline (`path: minilm-sst2`): fine-tuned once, then cached."""

    examples: int = knob(2000, "SST-2 training sentences used (data/robustness/train)", ge=8)
    epochs: int = knob(1, "passes over them", ge=1)
    lr: float = knob(5e-5, "AdamW learning rate", gt=0)
    batch_size: int = knob(32, "sentences per step", ge=1)
    max_length: int = knob(64, "tokens per sentence", ge=8)


@dataclass
class RobustnessConfig:
    """The robustness workload: every (model, task) pair evaluated, scored and tabled."""

    tasks: list[str] = knob(list(TASKS), "tasks to evaluate (tasks.TASKS)", choices=tuple(TASKS))
    data_paths: dict[str, str] = knob({}, "task -> your copy of its data in the original format "
                                          "(AdvGLUE dev.json, ANLI test.jsonl); default: shipped")
    models: list[ModelConfig] = knob(
        [ModelConfig(name="ChatGPT", kind="stored")], "models to compare, one table row each")
    prompt: PromptConfig = knob(factory=PromptConfig)
    decoding: DecodingConfig = knob(factory=DecodingConfig)
    finetune: FinetuneConfig = knob(factory=FinetuneConfig)
    zh_tokenizer: str = knob("auto", "Chinese segmentation for BLEU/GLEU/METEOR: jieba (the "
                                     "paper's), char, or auto (jieba if installed)",
                             choices=ZH_TOKENIZERS)
    cache_dir: str = knob(".orchestrator/cache/robustness", "where fine-tuned baselines are kept "
                                                            "between runs", kind="dir")

    def validate(self) -> None:
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("tasks", f"must list each task once, got {self.tasks}")
        if not self.models:
            raise ConfigError("models", "is empty", "list at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ConfigError("models", f"model names repeat: {names}", "give each a unique name")
        for task, path in self.data_paths.items():
            if task not in TASKS:
                raise ConfigError(f"data_paths.{task}", "unknown task",
                                  f"known: {', '.join(TASKS)}")
            check_data_file(task, path)
        for i, m in enumerate(self.models):
            if not [t for t in self.tasks_of(m)]:
                raise ConfigError(f"models[{i}].tasks", f"model '{m.name}' has no task to run "
                                  f"among {self.tasks}", "add a task its backend supports")

    def tasks_of(self, model: ModelConfig) -> list[str]:
        """The tasks `model` runs: its own list, else every section task its backend supports."""
        if model.tasks:
            return [t for t in self.tasks if t in model.tasks]
        return [t for t in self.tasks if not backends.unsupported(model, TASKS[t])]


def check_data_file(task: str, path: str) -> None:
    """A user's copy of a task's data must be what the task's reader takes, with rows: read it
    once here (cached per file version), so a folder, a non-UTF-8 or non-JSON file, a JSON of
    another shape or an empty table fails before Ray starts, naming `data_paths.<task>`."""
    key, expected = f"data_paths.{task}", TASKS[task].file_format
    file = checks.require_file(key, path, expected)
    stat = file.stat()
    problem = _data_problem(task, str(file.resolve()), stat.st_mtime_ns, stat.st_size)
    if problem:
        raise ConfigError(key, f"{path} {problem}", f"give {expected}")


@functools.lru_cache(maxsize=32)
def _data_problem(task: str, path: str, mtime_ns: int, size: int) -> str | None:
    """Why the task's reader cannot take this file version, or None."""
    problem = text_problem(Path(path).read_bytes())
    if problem:
        return problem
    try:
        rows = TASKS[task].load(path)
    except KeyError as err:
        return f"is not {TASKS[task].file_format}: no field {err}"
    except (ValueError, TypeError, AttributeError, IndexError, csv.Error) as err:
        why = str(err).splitlines()[0].removeprefix(f"{path}: ")
        return f"is not {TASKS[task].file_format}: {why}"
    return None if rows else "has no rows"
