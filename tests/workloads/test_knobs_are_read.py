"""No knob is accepted that nothing reads: every field of every workload's config (and of the
sections it embeds) is read, as `.name`, by its own package or by the core.

A static check, so it cannot prove a read matters, but it catches the knob that validates and then
does nothing (`prince.federation.rounds` once did exactly that).
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from orchestrator import registry
from tests.conftest import REPO


def _fields(cls: type, prefix: str = ""):
    for f in dataclasses.fields(cls):
        path = f"{prefix}.{f.name}" if prefix else f.name
        kind = f.type if isinstance(f.type, type) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            yield from _fields(type(default), path)
        elif kind is None or not dataclasses.is_dataclass(kind):
            yield path, f.name


def _source(*folders) -> str:
    return "\n".join(p.read_text() for folder in folders for p in sorted(folder.rglob("*.py")))


@pytest.mark.parametrize("name", registry.names())
def test_every_knob_of_the_workload_is_read_somewhere(name):
    workload = registry.get(name)
    code = _source(REPO / "workloads" / name, REPO / "orchestrator")
    unread = [path for path, field in _fields(workload.config_cls)
              if not re.search(rf"\.{field}\b|[\"']{field}[\"']", code)]
    assert not unread, f"{name}: knobs nothing reads: {', '.join(unread)}"
