"""The algorithm knobs: defaults build, cross-field rules fail at the edge with the key path."""
from __future__ import annotations

import pytest

from orchestrator.config import ConfigError, build
from workloads.deepfusion.config import DeepFusionConfig


def test_defaults_build_and_every_knob_has_help():
    from orchestrator.config import leaf_fields

    cfg = build(DeepFusionConfig, {})
    assert cfg.moe.num_experts >= cfg.moe.top_k and cfg.vaa.queries % cfg.vaa.stages == 0
    assert all(meta.get("help") for _, meta in leaf_fields(DeepFusionConfig).values())


@pytest.mark.parametrize("data,key", [
    ({"vaa": {"queries": 10, "stages": 4}}, "deepfusion.vaa.queries"),
    ({"data": {"seq_len": 60}}, "deepfusion.vaa.queries"),
    ({"vaa": {"dim": 10, "heads": 4}}, "deepfusion.vaa.dim"),
    ({"moe": {"num_experts": 2, "top_k": 3}}, "deepfusion.moe.top_k"),
    ({"moe": {"family": "x"}}, "deepfusion.moe.family"),
    ({"models": {"moe_family": "switch"}}, "deepfusion.models.moe_family"),
    ({"models": {"student_source": "smollm2-2"}}, "deepfusion.models.student_source"),
    ({"models": {"device_models": ["gpt5"]}}, "deepfusion.models.device_models[0]"),
    ({"models": {"pretrained_path": "/no/such/dir"}}, "deepfusion.models.pretrained_path"),
    ({"data": {"test_fraction": 0.5, "public_fraction": 0.5}}, "deepfusion.data.public_fraction"),
    # these three used to pass validation and fail inside Ray, after Phase 0 had run
    ({"data": {"seq_len": 640}, "models": {"size": "tiny"}}, "deepfusion.data.seq_len"),
    ({"moe": {"num_experts": 2}, "run": {"ep_workers": 2}}, "deepfusion.moe.num_experts"),
    ({"data": {"max_records": 10}, "federation": {"num_devices": 8}},
     "deepfusion.data.max_records"),
])
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError) as err:
        build(DeepFusionConfig, data, "deepfusion")
    assert err.value.key == key
