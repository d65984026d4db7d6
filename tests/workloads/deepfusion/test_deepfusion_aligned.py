"""Phase I averages aligned networks: every device of one model type fine-tunes from one shared
release of it, so a cluster's proxy (their weight average, Fig. 4) is no worse than its worst
member on held-out text. (From independent random starts the average is worse than every member:
the issue measured 8.56 log-PPL against members' 7.19-7.25.)"""
from __future__ import annotations

import pytest

from orchestrator.federated.pool import DeviceTask
from workloads.deepfusion.clustering import average_weights
from workloads.deepfusion.metrics import evaluate_lm
from workloads.deepfusion.models import build_device_model
from workloads.deepfusion.programs import (LocalLmProgram, LocalSpec, ReleaseJob,
                                           shared_init_seed, train_release)


def test_devices_of_one_type_share_their_initial_weights_and_types_differ():
    assert shared_init_seed(0, "gpt2") == shared_init_seed(0, "gpt2")
    assert shared_init_seed(0, "gpt2") != shared_init_seed(0, "llama")
    assert shared_init_seed(0, "gpt2") != shared_init_seed(1, "gpt2")


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_a_cluster_average_is_no_worse_than_its_worst_member_on_held_out_text(model, tokenizer,
                                                                              real_blocks):
    from workloads.deepfusion.data import lm_blocks, load_case

    records = [r.text for r in load_case("financial")]
    public = lm_blocks(records[200:700], tokenizer, 32)
    shards = [records[700 + i:1060:3] for i in range(3)]  # three devices, disjoint private data
    release = train_release(ReleaseJob(model, "tiny", public, 30, 8, "adamw", 3e-3, seed=0))
    spec = LocalSpec([model] * 3, shards, "tiny", 32, 8, "adamw", 3e-3, 30,
                     "random_projection", 16, 0, 4, releases={model: release})
    program = LocalLmProgram(spec)
    states = [program.train(n, {}, DeviceTask(round=0, seed=0)).update["model"] for n in range(3)]

    def log_ppl(state):
        net = build_device_model(model, "tiny")
        net.load_state_dict(state)
        return evaluate_lm(net, real_blocks[:64])["log_ppl"]

    members = [log_ppl(s) for s in states]
    assert log_ppl(average_weights(states)) <= max(members), members
