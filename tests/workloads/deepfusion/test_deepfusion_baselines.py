"""FedJETS' compact MoE (prune, merge back) and the communication accounting."""
from __future__ import annotations

import math

import torch

from orchestrator.federated.pool import DeviceUpdate
from workloads.deepfusion.baselines import (ExpertMergeSums, compact_moe, deepfusion_upload_bytes,
                                            fedjets_round_bytes, merge_compact_moes, num_experts,
                                            route_device_to_experts)
from workloads.deepfusion.models import build_student
from workloads.deepfusion.upcycle import expert_ffn, upcycle


def _moe(family="qwen3_moe", K=4):
    return upcycle([build_student(family, "tiny", seed=i) for i in range(K)], family, 2, seed=0)


def test_compact_moe_holds_the_chosen_experts_and_the_shared_weights(batch):
    for family in ("qwen3_moe", "deepseek_v3"):
        moe = _moe(family)
        local = compact_moe(moe, [1, 3])
        assert torch.equal(expert_ffn(local, 0, 1)["down_proj.weight"],
                           expert_ffn(moe, 0, 3)["down_proj.weight"])
        assert torch.equal(local.model.layers[1].mlp.gate.weight,
                           moe.model.layers[1].mlp.gate.weight[[1, 3]])
        assert torch.equal(local.model.embed_tokens.weight, moe.model.embed_tokens.weight)
        assert torch.isfinite(local(input_ids=batch, labels=batch).loss)


def test_merge_averages_each_expert_over_the_devices_that_trained_it():
    moe = _moe()
    ids = [[0, 1], [1, 2]]
    locals_ = [compact_moe(moe, i) for i in ids]
    with torch.no_grad():
        for value, local in zip((1.0, 3.0), locals_):
            for p in local.parameters():
                p.fill_(value)
    untouched = expert_ffn(moe, 0, 3)["down_proj.weight"].clone()
    merge_compact_moes(moe, locals_, ids)
    assert torch.all(expert_ffn(moe, 0, 0)["down_proj.weight"] == 1.0)
    assert torch.all(expert_ffn(moe, 0, 1)["down_proj.weight"] == 2.0)
    assert torch.all(expert_ffn(moe, 1, 2)["gate_proj.weight"] == 3.0)
    assert torch.equal(expert_ffn(moe, 0, 3)["down_proj.weight"], untouched)
    assert torch.all(moe.model.embed_tokens.weight == 2.0)
    assert torch.all(moe.model.layers[0].mlp.gate.weight[1] == 2.0)


def _merge_by_definition(global_state, states, ids, weights):
    """FedJETS' merge written out: shared weights FedAvg'd over every device; each expert row
    averaged over the devices that trained it, others left as they were."""
    out = {}
    for k, g in global_state.items():
        if k.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj", "mlp.gate.weight")):
            rows = g.clone()
            for e in range(g.shape[0]):
                held = [(w, sd[k][i.index(e)]) for sd, i, w in zip(states, ids, weights) if e in i]
                if held:
                    rows[e] = sum(w * r for w, r in held) / sum(w for w, _ in held)
            out[k] = rows
        else:
            out[k] = sum(w * sd[k] for sd, w in zip(states, weights)) / sum(weights)
    return out


def test_sums_folded_on_two_actors_give_the_merge_of_all_compact_moes():
    moe, ids, weights = _moe(), [[0, 1], [1, 2], [3, 1]], [1.0, 2.0, 0.5]
    compacts = [compact_moe(moe, i) for i in ids]
    torch.manual_seed(0)
    with torch.no_grad():
        for local in compacts:
            for p in local.parameters():
                p.add_(torch.randn_like(p))
    updates = [DeviceUpdate({"state": c.state_dict(), "experts": torch.tensor(i)}, w, 1, 0, {})
               for c, i, w in zip(compacts, ids, weights)]
    sums = ExpertMergeSums(num_experts(moe.config))
    total = sums.combine([sums.partial(updates[:2]), sums.partial(updates[2:]), None])
    streamed = ExpertMergeSums.merged_state(moe.state_dict(), total)
    expected = _merge_by_definition(moe.state_dict(), [c.state_dict() for c in compacts], ids,
                                    weights)
    merge_compact_moes(moe, compacts, ids, weights)
    for k, v in moe.state_dict().items():
        torch.testing.assert_close(streamed[k], expected[k], msg=k)
        torch.testing.assert_close(v, expected[k], msg=k)
    assert sums.combine([None, sums.partial([])]) is None


def test_devices_are_routed_to_n_distinct_experts(batch):
    chosen = route_device_to_experts(_moe(), batch, n=2)
    assert len(set(chosen)) == 2 and all(0 <= e < 4 for e in chosen)


def test_communication_bytes():
    assert fedjets_round_bytes(1_000, num_devices=8, rounds=5) == 80_000
    assert deepfusion_upload_bytes([100, 200, 300], embedding_dim=16) == 600 + 3 * 64


def test_fedjets_bytes_at_equal_quality_are_its_traffic_until_it_first_matches_the_target():
    from workloads.deepfusion.pipeline import bytes_at_quality

    fedjets = {"round_log_ppl": [7.0, 6.1, 5.9, 6.0], "round_cum_bytes": [10.0, 20.0, 30.0, 40.0]}
    assert bytes_at_quality(fedjets, 6.1) == 20.0  # reached in round 1, not after all rounds
    assert bytes_at_quality(fedjets, 7.5) == 10.0
    assert math.isnan(bytes_at_quality(fedjets, 5.0))  # never within its rounds: reported "never"
