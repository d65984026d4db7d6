"""DeepFusion's phases and baselines as plain functions of (config, setup, context).

Pipeline (each method's result: final metrics, loss histories, comm bytes, peak device memory):

  setup    split the records (test / public / private), sample the device population, partition
           the private records over the devices with domain skew, each device picks its model
  Phase 0  devices train their on-device LLMs on the pool and upload model + e_n once (Collect)
  Phase I  cluster the e_n within model types into K clusters, average each into a proxy
  Phase II proxy -> dense student by the method's KD (a Ray task per cluster, one teacher
           forward per batch for every method): deepfusion (VAA), deepfusion_no_vaa, ofa_kd,
           fedmkt and the control student_ce_only (alpha = beta = 0) all reuse Phase 0's
           uploads and Phase I's proxies
  Phase III upcycle the K students into the MoE, tune it with the experts frozen on the public
           data, every KD method on the same path (`run.phase3`): expert-parallel on Ray Train
           (DeepSpeed AutoEP; the consolidated weights loaded into a plain HF model and scored)
           or upcycled, tuned and scored in one Ray task per method
  centralized  the MoE trained from scratch on the pooled private + public data (Ray Train, EP)
  fedjets  R rounds on the engine: each device trains a compact MoE of its top experts

Caching and resume: every phase's output is kept by `ctx.cached` under the phase's name and a
digest of the seed and the config sections it reads (`phase_deps`); FedJETS runs on the engine
(`ctx.federation`), which checkpoints every round. A resumed run (`run --resume`) finds what a killed run finished, and the
trials of a sweep share what their configs have in common (Phases 0 and I of an alpha/beta sweep
run once). Nothing here logs to MLflow: `workload.py` reports what these functions return.
Every seed derives from `cfg.seed` (`ctx.rng`, `programs.derive_seed`).
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from orchestrator.state import digest
from orchestrator.federated.strategy import RoundPlan, Strategy, sample_share
from workloads.deepfusion import programs
from workloads.deepfusion.config import DeepFusionConfig
from workloads.deepfusion.programs import derive_seed

log = logging.getLogger(__name__)
EXPERT_PATTERNS = (r"\.mlp\.(shared_)?experts\.",)  # frozen in Phase III (upcycle.EXPERT_KEYS)


@dataclass
class Setup:
    """The data and the devices every method shares."""

    population: Any
    device_models: list[str]
    device_texts: list[list[str]]
    device_blocks: list            # (n_d, T) token blocks per device
    public_blocks: Any
    test_blocks: Any
    private_text_bytes: int
    test_answers: Any = None       # (ids, mask) of held-out records: answer-only token accuracy
    private_blocks: Any = None     # the whole private split in one place (centralized training)


# --------------------------------------------------------------------------- helpers
def phase_deps(c: DeepFusionConfig, phase: str, method: str = "") -> tuple:
    """The config sections a phase's output depends on, and nothing else: its `ctx.cached` key
    (beside the seed). Whole dataclasses, so a knob inside one can never be forgotten; a section
    left out is one a phase does not read (alpha and beta do not redo Phases 0 and I)."""
    r = c.run
    devices = (c.data, c.models, c.local, c.clustering, c.federation)
    if phase == "releases":  # not per seed nor per population: one published model per type
        return (c.data, c.models, c.local)
    if phase == "phase1":  # with Phase 0
        return (*devices, c.moe.num_experts, r.eval_blocks)
    if phase == "phase2":
        return (*devices, c.moe.num_experts, c.distill, c.vaa, c.baselines, method)
    if phase == "phase3":
        return (*phase_deps(c, "phase2", method), c.moe, r.ep_workers, r.eval_blocks,
                r.eval_answers, r.phase3, r.use_gpu)
    if phase == "centralized":  # the pooled data: one run per seed for every population
        return (c.data, c.models, c.moe, c.local.lr, r.centralized_steps,
                r.ep_workers, r.eval_blocks, r.eval_answers, r.use_gpu)
    if phase == "fedjets":
        return (c.data, c.models, c.federation, c.moe, c.local, c.baselines,
                r.round_eval_blocks, r.eval_blocks, r.eval_answers)
    raise KeyError(phase)


def vocabulary(c: DeepFusionConfig) -> np.ndarray | None:
    """The shared token ids the models keep (`data.vocabulary: case`), or None: all of them."""
    from workloads.deepfusion.data import case_vocabulary

    return case_vocabulary(c.data.case) if c.data.vocabulary == "case" else None


def vocab_size(c: DeepFusionConfig) -> int | None:
    return programs.vocab_size(vocabulary(c))


def _moe_config(c: DeepFusionConfig):
    from workloads.deepfusion.models import student_config
    from workloads.deepfusion.upcycle import moe_config

    m = c.models
    return moe_config(student_config(m.moe_family, m.size, m.student_source, vocab_size(c)),
                      m.moe_family, c.moe.num_experts, c.moe.top_k)


def pretrained(c: DeepFusionConfig, name: str) -> dict:
    """The real weights of the pretrained model `name` (loaded once per process)."""
    from workloads.deepfusion.models import pretrained_state

    return pretrained_state(name, c.models.pretrained_path, c.models.pretrained_gguf_file,
                            vocabulary(c))


def initial_moe_state(c: DeepFusionConfig, seed: int, student: dict | None) -> dict:
    """Where the MoE-trained baselines (centralized, FedJETS) start. With a pretrained student
    (`student`: its release weights, as DeepFusion's students start): the MoE upcycled from K
    copies of it (every expert its FFN, a fresh gate); else a random MoE from `seed`."""
    from dataclasses import replace

    from orchestrator.train import build_causal_lm

    if student is None:
        moe = build_causal_lm(_moe_config(c), seed)
    else:  # the one upcycling path Phase III takes, its gate drawn from `seed`
        moe = programs.upcycle_students([student] * c.moe.num_experts,
                                        replace(upcycling(c, 0), seed=seed))
    return {k: v.detach().clone() for k, v in moe.state_dict().items()}


def student_release(c: DeepFusionConfig, setup: Setup, ctx) -> dict | None:
    """The students' initial weights when they start from a pretrained model, else None."""
    source = c.models.student_source
    return releases(c, setup, ctx)[source] if source else None


def _evaluate(c: DeepFusionConfig, model_config, state: dict, blocks, answers=None) -> dict:
    from workloads.common.tiny_lm import causal_lm_with_state
    from workloads.deepfusion.metrics import evaluate_lm

    return evaluate_lm(causal_lm_with_state(model_config, state), blocks,
                       c.data.eval_batch_size, answers)


# --------------------------------------------------------------------------- setup
def prepare(c: DeepFusionConfig, ctx) -> Setup:
    from orchestrator.federated.population import partition, sample_population
    from workloads.deepfusion.data import (answer_examples, case_tokenizer, lm_blocks, load_case,
                                           split_records)
    from workloads.deepfusion.models import pick_model_for_memory

    records = load_case(c.data.case)
    if c.data.max_records and c.data.max_records < len(records):
        keep = np.random.default_rng([c.data.split_seed, 1]).choice(len(records),
                                                                     c.data.max_records, False)
        records = [records[i] for i in sorted(keep)]
    splits = split_records(records, c.data.test_fraction, c.data.public_fraction,
                           c.data.split_seed)
    fed = c.federation
    population = sample_population(fed, ctx.rng(0))
    sources = {r.source for r in splits.private}  # domain skew: by corpus, else by label
    skew = [r.source if len(sources) > 1 else r.label for r in splits.private]
    shards = partition(np.asarray(skew), fed.num_devices, fed.size_skew, fed.label_alpha,
                       ctx.rng(1))
    m = c.models
    models = [pick_model_for_memory(float(population.memory_mb[n]), m.device_models,
                                    ctx.rng(2, n), m.size, c.local.optimizer,
                                    c.data.batch_size, c.data.seq_len, m.dtype_bytes,
                                    m.finetune, m.lora_rank, vocab_size(c))
              for n in range(fed.num_devices)]
    tok = case_tokenizer(vocabulary(c))
    texts = [[splits.private[i].text for i in shard] for shard in shards]
    test = lm_blocks([r.text for r in splits.test], tok, c.data.seq_len)
    return Setup(population, models, texts, [lm_blocks(t, tok, c.data.seq_len) for t in texts],
                 lm_blocks([r.text for r in splits.public], tok, c.data.seq_len),
                 test[:c.run.eval_blocks], sum(len(r.text.encode()) for r in splits.private),
                 answer_examples(splits.test[:c.run.eval_answers], tok, c.data.seq_len),
                 lm_blocks([r.text for r in splits.private], tok, c.data.seq_len))


# --------------------------------------------------------------------------- Phase 0
def releases(c: DeepFusionConfig, setup: Setup, ctx) -> dict[str, dict]:
    """{model name: initial weights} for every on-device model type in use and the students'
    pretrained source: one shared start per type, trained `local.release_steps` on the public
    split (parallel Ray tasks) from its type's seed, or from the real weights for smollm2 cuts
    (healing the cut). From `local.release_seed`, cached once for every seed and population
    size (the public split does not depend on either); FedJETS and centralized start from the
    student's too."""
    from orchestrator.runtime import share
    from workloads.deepfusion.config import PRETRAINED

    def build() -> dict[str, dict]:
        names = sorted(set(c.models.device_models) | {c.models.student_source} - {None})
        jobs = [programs.ReleaseJob(n, c.models.size, setup.public_blocks, c.local.release_steps,
                                    c.data.batch_size, c.local.optimizer, c.local.lr,
                                    c.local.release_seed,
                                    share(pretrained(c, n)) if n in PRETRAINED else None,
                                    vocab_size(c))
                for n in names]
        return dict(zip(names, ctx.map(programs.train_release, jobs, desc="on-device releases",
                                       num_gpus=task_gpus(c))))

    return ctx.cached("releases", phase_deps(c, "releases"), build, per_seed=False)


def run_phase0(c: DeepFusionConfig, setup: Setup, ctx) -> dict:
    """Every device trains its model and uploads it once with e_n (one pass on the engine)."""
    import torch

    from orchestrator.federated.comm import round_summary

    fed, cl, seed = c.federation, c.clustering, ctx.seed
    spec = programs.LocalSpec(setup.device_models, setup.device_texts, c.models.size,
                              c.data.seq_len, c.data.batch_size, c.local.optimizer, c.local.lr,
                              c.local.steps, cl.embedding, cl.embedding_dim,
                              derive_seed(seed, 3), c.models.dtype_bytes,
                              releases(c, setup, ctx), c.models.finetune, c.models.lora_rank,
                              str(upload_dir(c, ctx)), vocabulary(c), setup.test_blocks,
                              c.data.eval_batch_size)
    with ctx.federation.session(fed, functools.partial(programs.make_local_program, spec),
                                setup.population) as fl:
        updates, reports = fl.map(range(fed.num_devices), {})
    keys = sorted({k for u in updates for k in u.metrics})
    return {"states": [u.update["model"] for u in updates],
            "embeddings": torch.stack([u.update["embedding"] for u in updates]),
            "samples": [float(u.num_samples) for u in updates],
            "device_metrics": {k: [float(u.metrics[k]) for u in updates] for k in keys},
            "round": {k: float(v) for k, v in round_summary(reports, setup.population).items()}}


def upload_dir(c: DeepFusionConfig, ctx) -> Path:
    """Where Phase 0's devices leave their models for Phase I (removed once averaged)."""
    name = f"phase0-uploads-{digest(ctx.seed, *phase_deps(c, 'phase1'))}"
    return (Path(ctx.checkpoint_dir) / name).resolve()  # absolute: Ray workers run elsewhere


# --------------------------------------------------------------------------- Phase I
def cluster_devices(c: DeepFusionConfig, setup: Setup, phase0: dict, seed: int) -> dict:
    """K clusters of devices (one model type each), each cluster's proxy model (Fig. 4), and the
    held-out log-PPL of every proxy beside its members' (an average of aligned networks should
    be no worse than its worst member)."""
    from workloads.deepfusion.clustering import (average_weights, cluster_members,
                                                 cluster_within_families)

    cl = c.clustering
    labels = cluster_within_families(phase0["embeddings"].numpy(), setup.device_models,
                                     c.moe.num_experts, derive_seed(seed, 4), cl.features,
                                     cl.restarts)
    members = cluster_members(labels)
    weights = [[phase0["samples"][n] for n in m] if cl.average_by == "data_size" else None
               for m in members]
    teachers = [setup.device_models[m[0]] for m in members]
    states = phase0["states"]  # each a model, or the path its device uploaded it to
    proxies = [average_weights([programs.uploaded(states[n]) for n in m], w)
               for m, w in zip(members, weights)]
    return {"labels": [int(x) for x in labels], "members": members, "teachers": teachers,
            "proxies": proxies,
            "proxy_log_ppl": [device_log_ppl(c, t, p, setup.test_blocks)
                              for t, p in zip(teachers, proxies)],
            "member_log_ppl": [[phase0["device_metrics"]["held_out_log_ppl"][n] for n in m]
                               for m in members]}  # each device scored its own


def device_log_ppl(c: DeepFusionConfig, model_name: str, state: dict, blocks) -> float:
    """Held-out log-PPL of an on-device model `model_name` with weights `state`."""
    from workloads.deepfusion.metrics import evaluate_lm
    from workloads.deepfusion.models import device_model_with

    model = device_model_with(model_name, c.models.size, state, vocab_size(c))
    return evaluate_lm(model, blocks, c.data.eval_batch_size)["log_ppl"]


# --------------------------------------------------------------------------- Phase II
def distill_jobs(c: DeepFusionConfig, setup: Setup, phase1: dict, methods: list[str],
                 seed: int, proxies: list, student_state=None) -> list[programs.DistillJob]:
    """One job per cluster for every method; `proxies` and `student_state` may be
    `runtime.share` references."""
    shared = c.distill.student_init == "shared"
    return [programs.DistillJob(tuple(methods), i, phase1["teachers"][i], proxies[i],
                                setup.public_blocks, c.models.size, c.models.moe_family,
                                derive_seed(seed, 5) if shared else derive_seed(seed, 5, i),
                                c.models.student_source, student_state,
                                derive_seed(seed, 6, i),
                                c.distill, c.vaa, c.baselines, c.data.batch_size,
                                vocab_size(c))
            for i in range(len(phase1["teachers"]))]


def distill_methods(c: DeepFusionConfig, setup: Setup, phase1: dict, methods: list[str],
                    ctx) -> dict[str, dict]:
    """Phase II of every KD method at once: one task per cluster distils every method's student
    from one teacher forward per batch. The proxies and the pretrained student go to the object
    store once, not once per task."""
    from orchestrator.runtime import share

    if not methods:
        return {}
    proxies = [share(p) for p in phase1["proxies"]]
    start = student_release(c, setup, ctx)
    student = share(start) if start is not None else None
    jobs = distill_jobs(c, setup, phase1, methods, ctx.seed, proxies, student)
    clusters = ctx.map(programs.distill_cluster, jobs, desc="Phase II distillation",
                       num_gpus=task_gpus(c))
    return {m: {"students": [r[m]["state"] for r in clusters],
                "losses": [r[m]["losses"] for r in clusters]} for m in methods}


def task_gpus(c: DeepFusionConfig) -> float:
    """`run.task_gpus`, or a whole GPU per task when the cluster has any."""
    from orchestrator.runtime import cluster_gpus

    return c.run.task_gpus if c.run.task_gpus is not None else float(cluster_gpus() > 0)


# --------------------------------------------------------------------------- Phase III
def _ep_run(c: DeepFusionConfig, ctx, name: str, key: tuple, model_config, tokens, test_blocks,
            frozen, seed: int, lr: float, init_state: dict | None = None) -> tuple[dict, dict]:
    """Expert-parallel training on `run.ep_workers` Ray Train workers; (HF state, metrics)."""
    from orchestrator.train import (ExpertParallelJob, deepspeed_config,
                                    expert_parallel_train_loop, load_consolidated,
                                    run_distributed)

    from orchestrator.runtime import cluster_gpus

    r = c.run
    gpu = r.use_gpu if r.use_gpu is not None else cluster_gpus() >= r.ep_workers
    micro = tokens.shape[1] // r.ep_workers
    ds = deepspeed_config(micro_batch_size=micro, ep_size=r.ep_workers, preset=c.models.moe_family,
                          zero_stage=0, lr=lr, use_gpu=gpu)
    job = ExpertParallelJob(model_config=model_config, tokens=tokens,
                            eval_tokens=test_blocks[:tokens.shape[1]], ds_config=ds,
                            steps=len(tokens), frozen=frozen, seed=seed, init_state=init_state,
                            checkpoint_every=r.ep_checkpoint_every)
    storage = str((Path(ctx.checkpoint_dir) / "ray_train").resolve())
    # Ray Train reloads whatever snapshot it finds under (storage, name): one name per seed and
    # configuration, so other seeds and sweep trials never get this one's weights back
    result = run_distributed(expert_parallel_train_loop, {"job": job}, r.ep_workers, gpu,
                             storage, f"{name}-{digest(ctx.seed, *key)}",
                             max_failures=r.ep_max_failures,
                             cpus_per_worker=r.ep_cpus_per_worker)
    log.info("%s: experts_by_rank %s%s", name, result.metrics.get("experts_by_rank"),
             f", restarted from step {result.metrics['resumed_from_step']}"
             if result.metrics.get("resumed_from_step") else "")
    return load_consolidated(result.checkpoint_path), result.metrics


def _token_plan(c: DeepFusionConfig, blocks, steps: int, seed: int):
    """(steps, global batch, T) with the global batch a multiple of the EP workers."""
    w = c.run.ep_workers
    batch = max(w, c.data.batch_size // w * w)
    return programs.batch_plan(blocks, steps, batch, np.random.default_rng(seed))


def upcycling(c: DeepFusionConfig, seed: int) -> programs.Upcycling:
    m = c.models
    return programs.Upcycling(m.moe_family, m.size, m.student_source, vocab_size(c),
                              c.moe.top_k, derive_seed(seed, 7), c.moe.gate_std)


def scoring(c: DeepFusionConfig, setup: Setup) -> programs.Scoring:
    return programs.Scoring(setup.test_blocks, setup.test_answers, c.run.round_eval_blocks,
                            c.data.eval_batch_size)


def upcycled_moe(c: DeepFusionConfig, students: list[dict], seed: int) -> tuple[dict, Any]:
    """Phase III's start (Eqs. 12-13): the K students upcycled into one MoE; (state, config)."""
    moe = programs.upcycle_students(students, upcycling(c, seed))
    return {k: v.detach().clone() for k, v in moe.state_dict().items()}, moe.config


def tune_methods(c: DeepFusionConfig, setup: Setup, students: dict[str, list[dict]],
                 ctx) -> dict[str, dict]:
    """Phase III of every KD method in `students` ({method: its K students}): upcycle, tune with
    the experts frozen on the same public batches, score. `run.phase3: ray_task` does all three
    for every method at once, one Ray task each; `ray_train` runs one expert-parallel job per
    method and scores on the driver."""
    from orchestrator.runtime import share

    seed = ctx.seed
    tokens = _token_plan(c, setup.public_blocks, c.moe.steps, derive_seed(seed, 8)) \
        if c.moe.steps else None
    if c.run.phase3 == "ray_train" and tokens is not None:
        return {m: _tune_on_ray_train(c, setup, ctx, m, s, tokens) for m, s in students.items()}
    jobs = [programs.TuneJob([share(x) for x in s], upcycling(c, seed), tokens, EXPERT_PATTERNS,
                             c.moe.optimizer, c.moe.lr, scoring(c, setup))
            for s in students.values()]
    results = ctx.map(programs.tune_moe_in_process, jobs, desc="Phase III",
                      num_gpus=task_gpus(c))
    return {m: {"experts_by_rank": {}, **r} for m, r in zip(students, results)}


def _tune_on_ray_train(c: DeepFusionConfig, setup: Setup, ctx, method: str, students: list,
                       tokens) -> dict:
    from workloads.common.tiny_lm import causal_lm_with_state

    init, config = upcycled_moe(c, students, ctx.seed)
    state, metrics = _ep_run(c, ctx, f"{method}-phase3", phase_deps(c, "phase3", method), config,
                             tokens, setup.test_blocks, EXPERT_PATTERNS, 0, c.moe.lr,
                             init_state=init)
    return {"losses": metrics["losses"], "experts_by_rank": metrics["experts_by_rank"],
            "ep_resumed_from_step": metrics["resumed_from_step"],
            **programs.score(causal_lm_with_state(config, state), scoring(c, setup))}


# --------------------------------------------------------------------------- baselines
def centralized(c: DeepFusionConfig, setup: Setup, ctx) -> dict:
    """The upper bound: the MoE trained on all private + public data (Ray Train), every weight
    trainable, at the devices' learning rate, from `initial_moe_state` (from scratch, or the
    upcycled pretrained student). The private split pooled as one corpus, so the result does not
    depend on how many devices hold it (`phase_deps`: computed once for N = 16 and 32)."""
    import torch

    from orchestrator.train import build_causal_lm
    from workloads.deepfusion.models import train_memory_bytes

    config = _moe_config(c)
    pooled = torch.cat([setup.private_blocks, setup.public_blocks])
    tokens = _token_plan(c, pooled, c.run.centralized_steps, derive_seed(ctx.seed, 9))
    seed = derive_seed(ctx.seed, 10)
    state, metrics = _ep_run(c, ctx, "centralized", phase_deps(c, "centralized"), config, tokens,
                             setup.test_blocks, (), seed, c.local.lr,
                             init_state=initial_moe_state(c, seed,
                                                          student_release(c, setup, ctx)))
    memory = train_memory_bytes(build_causal_lm(config, seed), "adamw", c.data.batch_size,
                                c.data.seq_len, c.models.dtype_bytes)
    final = _evaluate(c, config, state, setup.test_blocks, setup.test_answers)
    return {"final": final, "losses": metrics["losses"],
            "experts_by_rank": metrics["experts_by_rank"], "comm_bytes": setup.private_text_bytes,
            "ep_resumed_from_step": metrics["resumed_from_step"],
            "peak_device_memory_bytes": memory}


class FedJets(Strategy):
    """FedJETS (Dun et al. 2023): a share of the devices each trains a compact MoE of its top
    experts; the actors fold them into running sums (`ExpertMergeSums`), which the global MoE
    divides out expert by expert."""

    def __init__(self, config, participation: float, evaluate: Callable[[dict], dict]):
        super().__init__(participation)
        self.config, self.evaluate_state = config, evaluate

    def configure(self, round_idx, state, online, rng, services) -> RoundPlan:
        from workloads.deepfusion.baselines import ExpertMergeSums, num_experts

        return RoundPlan(sample_share(online, self.participation, rng).tolist(),
                         reducer=ExpertMergeSums(num_experts(self.config)))

    def aggregate(self, round_idx, state, aggregate, reports, services) -> dict:
        from orchestrator.runtime import trim_memory
        from workloads.deepfusion.baselines import ExpertMergeSums

        if aggregate is None:
            return state
        merged = ExpertMergeSums.merged_state(state, aggregate)
        del aggregate
        trim_memory()  # the previous round's sums and state
        return merged

    def evaluate(self, round_idx, state) -> dict:
        return self.evaluate_state(state)


def fedjets(c: DeepFusionConfig, setup: Setup, ctx,
            on_round: Callable[[int, dict], None] = lambda r, m: None) -> dict:
    """FedJETS on the engine: R rounds, compact MoEs up and down every round."""
    from transformers import AutoModelForCausalLM

    from workloads.deepfusion.baselines import compact_moe
    from workloads.deepfusion.metrics import evaluate_lm
    from workloads.deepfusion.models import train_memory_bytes

    config, fed, b = _moe_config(c), c.federation, c.baselines
    moe = AutoModelForCausalLM.from_config(config)
    state = initial_moe_state(c, derive_seed(ctx.seed, 11), student_release(c, setup, ctx))
    spec = programs.FedJetsSpec(config, setup.device_blocks, b.fedjets_experts,
                                b.fedjets_local_steps, c.data.batch_size, c.local.optimizer,
                                c.local.lr, c.models.dtype_bytes)
    eval_blocks = setup.test_blocks[:c.run.round_eval_blocks]

    def evaluate(s: dict) -> dict:
        moe.load_state_dict(s)
        return {"eval_log_ppl": evaluate_lm(moe, eval_blocks, c.data.eval_batch_size)["log_ppl"]}

    with ctx.federation.session(fed, functools.partial(programs.make_fedjets_program, spec),
                                setup.population) as fl:
        result = fl.run("fedjets", FedJets(config, b.fedjets_participation, evaluate), state,
                        b.fedjets_rounds, key=phase_deps(c, "fedjets"), on_round=on_round)
    state, history = result.state, result.history
    comm = sum(h["bytes_up"] + h["bytes_down"] for h in history)  # 2 |compact MoE| per device
    local = compact_moe(moe, list(range(b.fedjets_experts)))
    memory = train_memory_bytes(local, c.local.optimizer, c.data.batch_size, c.data.seq_len,
                                c.models.dtype_bytes, finetune=c.models.finetune,
                                lora_rank=c.models.lora_rank)
    final = _evaluate(c, config, state, setup.test_blocks, setup.test_answers)
    return {"final": final, "comm_bytes": float(comm),
            "peak_device_memory_bytes": float(memory), "rounds": float(len(history)),
            "round_log_ppl": [h["eval_log_ppl"] for h in history],
            "round_cum_bytes": [h["cum_bytes"] for h in history]}


def bytes_at_quality(fedjets_result: dict, target_log_ppl: float) -> float:
    """FedJETS' traffic until its global MoE first reaches `target_log_ppl` on the round
    evaluation blocks; NaN when it never does within its rounds (report it as "never")."""
    for log_ppl, cum in zip(fedjets_result["round_log_ppl"], fedjets_result["round_cum_bytes"]):
        if log_ppl <= target_log_ppl:
            return float(cum)
    return float("nan")


# --------------------------------------------------------------------------- all methods
def run_methods(c: DeepFusionConfig, setup: Setup, ctx,
                on_round: Callable[[int, dict], None] = lambda r, m: None) -> dict[str, dict]:
    """Every method of `c.run.methods`: {method: result}. The KD methods share Phases 0 and I."""
    from workloads.deepfusion.config import KD_METHODS

    from orchestrator.runtime import trim_memory

    results = {}
    kd = [m for m in c.run.methods if m in KD_METHODS]
    if kd:
        results.update(run_kd_methods(c, setup, kd, ctx))
        trim_memory()  # every device's and student's weights were dropped: give them back
    if "centralized" in c.run.methods:
        results["centralized"] = ctx.cached("centralized", phase_deps(c, "centralized"),
                                            lambda: centralized(c, setup, ctx))
        trim_memory()
    if "fedjets" in c.run.methods:
        results["fedjets"] = ctx.cached("fedjets", phase_deps(c, "fedjets"),
                                        lambda: fedjets(c, setup, ctx, on_round))
    return {m: results[m] for m in c.run.methods}


def run_kd_methods(c: DeepFusionConfig, setup: Setup, methods: list[str], ctx) -> dict:
    """Phases 0-III for the one-shot KD methods; Phases 0 and I are shared by all of them. Kept
    on disk: Phase I's proxies (with Phase 0's summary: every device's model is averaged into
    them, never stored) and each method's Phase III result (Phases II and III, in one go)."""
    from orchestrator.runtime import trim_memory

    both = ctx.cached("phase1", phase_deps(c, "phase1"), lambda: phases_0_and_1(c, setup, ctx))
    phase0, phase1 = both["phase0"], both["phase1"]
    missing = [m for m in methods if not ctx.is_cached(f"phase3_{m}", phase_deps(c, "phase3", m))]
    fresh = {}
    if missing:
        distilled = distill_methods(c, setup, phase1, missing, ctx)  # all KD tasks at once
        del phase1["proxies"]
        trim_memory()
        tuned = tune_methods(c, setup, {m: d.pop("students") for m, d in distilled.items()}, ctx)
        fresh = {m: {**tuned[m], "distill_losses": distilled[m]["losses"]} for m in missing}
    comm, memory = programs_comm(c, phase0), max(phase0["device_metrics"]["memory_bytes"])
    out = {}
    for m in methods:
        result = ctx.cached(f"phase3_{m}", phase_deps(c, "phase3", m), lambda m=m: fresh.pop(m))
        out[m] = {**result, "comm_bytes": comm, "peak_device_memory_bytes": memory,
                  "phase0": phase0["device_metrics"], "clusters": phase1["members"],
                  "proxies": proxy_rows(phase1)}
    return out


def phases_0_and_1(c: DeepFusionConfig, setup: Setup, ctx) -> dict:
    """Phase 0 (every device trains and uploads) and Phase I (clusters, proxies). The devices'
    models go through files (`upload_dir`), read one cluster at a time and removed once averaged:
    at N = 32 they are 9 GB, which held in memory (and in Ray's object store on the way) ran a
    23 GB machine out of memory."""
    import shutil

    phase0 = run_phase0(c, setup, ctx)
    phase1 = cluster_devices(c, setup, phase0, ctx.seed)
    del phase0["states"]
    shutil.rmtree(upload_dir(c, ctx), ignore_errors=True)
    return {"phase0": phase0, "phase1": phase1}


def proxy_rows(phase1: dict) -> list[dict]:
    """One row per cluster: its teacher type, members, and proxy vs member held-out log-PPL."""
    return [{"cluster": i, "teacher": t, "members": " ".join(map(str, m)),
             "proxy_log_ppl": p, "best_member_log_ppl": min(ms), "worst_member_log_ppl": max(ms)}
            for i, (t, m, p, ms) in enumerate(zip(phase1["teachers"], phase1["members"],
                                                  phase1["proxy_log_ppl"],
                                                  phase1["member_log_ppl"]))]


def programs_comm(c: DeepFusionConfig, phase0: dict) -> float:
    """One-shot traffic: sum_n |m_n| + N |e_n| (Eq. 5)."""
    from workloads.deepfusion.baselines import deepfusion_upload_bytes

    dim = int(phase0["embeddings"].shape[1])
    return float(deepfusion_upload_bytes(phase0["device_metrics"]["model_bytes"], dim,
                                         c.models.dtype_bytes))
