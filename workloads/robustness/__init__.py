"""Robustness of language models, adversarial and out-of-distribution (Wang et al., "On the
Robustness of ChatGPT", arXiv 2302.12095): the paper's tasks, prompts, parsing and metrics, its
stored ChatGPT answers, and any local or HTTP model evaluated the same way.

Plain modules (no Ray, no MLflow):
  tasks.py        the task registry: AdvGLUE sst2/qqp/mnli/qnli/rte, ANLI R3, Flipkart, DDXPlus,
                  AdvGLUE-T; loaders of the original formats
  prompts.py      the paper's PROMPT_SET / LABEL_SET / LABEL_TO_ID, verbatim
  parsing.py      free text -> label by the paper's substring rules (unparsed counts as wrong)
  metrics.py      ASR, macro-F1, BLEU / GLEU / METEOR
  stored.py       the authors' ChatGPT answers
  paper_tables.py the paper's published tables
  backends.py     the one backend interface; stored and OpenAI-compatible HTTP backends
  local_models.py local transformers backends: generative, zero-shot NLI, classifier
  finetune.py     the MiniLM-on-SST-2 classifier baseline, fine-tuned once and cached
  report.py       scoring, bad cases, the paper's tables beside ours (CSV + PNG)
  claims.py       the paper's claims `orchestrator reproduce robustness` checks
Orchestration:
  evaluate.py     Ray actor pools per model, batched, resumable per-example answers (JSONL)
  workload.py     run(cfg, ctx): a child run per (model, task); trial(cfg, ctx): one sweep point
See README.md here for what is the paper's and what is ours.
"""
from orchestrator.workload import Workload
from workloads.robustness.claims import CLAIMS
from workloads.robustness.config import RobustnessConfig
from workloads.robustness.workload import resource_requests, run, trial, trial_metrics

WORKLOAD = Workload(
    name="robustness", config_cls=RobustnessConfig, run=run, trial=trial,
    trial_metrics=trial_metrics, resource_requests=resource_requests, claims=CLAIMS,
    readme_figure="seed_0/table_adversarial",
    description="adversarial (AdvGLUE, ANLI) and OOD (Flipkart, DDXPlus) robustness and "
                "adversarial translation of stored ChatGPT answers, local and HTTP models")

__all__ = ["WORKLOAD"]
