"""Cheap up-front checks that a file or folder the config names is the right kind of thing.

`knob(kind="file"|"dir")` checks only file versus folder. A workload's `validate()` calls the
functions here for what lies inside: UTF-8 text, JSON that parses to the right top-level type, a
model folder with a `config.json`, a GGUF file with the GGUF magic. They read little (a JSON file
once per version, four bytes of a GGUF), so a config still validates in well under a second, and
each failure is one `ConfigError` naming the key and what is expected, instead of an
IsADirectoryError, a JSONDecodeError or a KeyError from inside a Ray task.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

from orchestrator.config import ConfigError, text_problem

GGUF_MAGIC = b"GGUF"


def as_path(value: str | Path) -> Path:
    return Path(os.path.expanduser(str(value)))


def require_file(key: str, value: str | Path, expected: str) -> Path:
    """`value` is an existing regular file, else a ConfigError that says what belongs there."""
    path = as_path(value)
    if path.is_dir():
        raise ConfigError(key, f"{value} is a folder, not a file", f"give {expected}")
    if not path.is_file():
        raise ConfigError(key, f"no such file: {value}", f"give {expected}")
    return path


def require_dir(key: str, value: str | Path, expected: str) -> Path:
    """`value` is an existing folder, else a ConfigError that says what belongs there."""
    path = as_path(value)
    if path.is_file():
        raise ConfigError(key, f"{value} is a file, not a folder", f"give {expected}")
    if not path.is_dir():
        raise ConfigError(key, f"no such folder: {value}", f"give {expected}")
    return path


def read_json(key: str, value: str | Path, expected: str, top: type = dict) -> Any:
    """Parse a JSON file whose top level must be `top` (dict or list); cached per file version."""
    path = require_file(key, value, expected)
    stat = path.stat()
    ok, data = _parsed_json(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if not ok:
        raise ConfigError(key, f"{value} {data}", f"give {expected}")
    if not isinstance(data, top):
        raise ConfigError(key, f"{value} holds a JSON {_json_kind(data)}, not "
                               f"{_json_kind(top(), article=True)}", f"give {expected}")
    return data


def _json_kind(data: Any, article: bool = False) -> str:
    name = {dict: "object", list: "list", str: "string"}.get(type(data), type(data).__name__)
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}" if article else name


@functools.lru_cache(maxsize=64)
def _parsed_json(path: str, mtime_ns: int, size: int) -> tuple[bool, Any]:
    """(True, data) or (False, why not): sweep checks build a config hundreds of times, so each
    version of a file (path, mtime, size) is read and parsed once."""
    raw = Path(path).read_bytes()
    problem = text_problem(raw)
    if problem:
        return False, problem
    try:
        return True, json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as err:
        return False, f"is not JSON ({err.msg} at line {err.lineno})"


def gguf_file(key: str, value: str | Path) -> Path:
    """A GGUF model file: it exists and starts with the GGUF magic bytes."""
    path = require_file(key, value, "a .gguf model file")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise ConfigError(key, f"{value} is not a GGUF file (no GGUF magic bytes)",
                              "give a .gguf model file")
    return path


def hf_model_folder(key: str, value: str | Path, gguf_name: str = "",
                    gguf_key: str = "") -> Path:
    """A local Hugging Face model folder: a `config.json` object inside, or, when `gguf_name` is
    given, that GGUF file inside (transformers reads the config from the GGUF then; a problem
    with it is reported at `gguf_key`)."""
    expected = "a model folder holding config.json (Hugging Face layout) or a .gguf file"
    folder = require_dir(key, value, expected)
    if gguf_name:
        gguf_file(gguf_key or key, folder / gguf_name)
        return folder
    if not (folder / "config.json").exists():
        if gguf_key and any(folder.glob("*.gguf")):
            raise ConfigError(key, f"{value} holds a .gguf but no config.json",
                              f"set {gguf_key} to the .gguf file's name")
        found = "it is empty" if not any(folder.iterdir()) else "it has no config.json"
        raise ConfigError(key, f"{value} is not a model folder: {found}", f"give {expected}")
    read_json(key, folder / "config.json", "a config.json holding a JSON mapping")
    return folder
