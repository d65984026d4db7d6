"""Bad input, class by class: each case exits 2 with one line naming the key, before Ray or MLflow
start, and writes nothing (no mlflow.db, no state folder).

Classes: non-finite numbers; files that exist but are the wrong kind or shape; config files that
are not UTF-8 and sections given as a list or a scalar; sweep axes whose values, alone or combined
with another axis, break a cross-field rule. Every workload and the verbs validate, run and sweep
appear in each class.
"""
from __future__ import annotations

import json
import re

import pytest

from orchestrator.cli import main
from tests.conftest import REPO, refuse_starts

EXPERIMENTS = REPO / "experiments"
ROBUSTNESS_SWEEP = ["sweep.metric=mean_accuracy"]   # the quickstart, swept (needs no SmolLM2)


def case(verb: str, config: str, overrides: list[str], key: str, *texts: str, id: str):
    """One bad input: `config` is 'workload/name' under experiments/ or '<file>' made by `files`;
    '<name>' in the config, overrides and key stands for that file of the `files` fixture."""
    return pytest.param(verb, config, overrides, key, texts, id=id)


# --------------------------------------------------------------------------- 1. non-finite numbers
NON_FINITE = [
    case("validate", "aeria/quickstart", ["aeria.reserve_price=.nan"], "aeria.reserve_price",
         "not a finite number", id="aeria-nan-where-a-bounded-number-is-meant"),
    case("run", "aeria/quickstart", ["aeria.values.mu=.inf"], "aeria.values.mu",
         "inf is not a finite number", id="aeria-inf-in-an-unbounded-knob"),
    case("validate", "aeria/quickstart", ["aeria.service_weights=[1,.inf,1,1]"],
         "aeria.service_weights[1]", "not a finite number", id="aeria-inf-inside-a-list"),
    case("run", "aeria/quickstart", ["aeria.edge.speed_gflops=1e400"], "aeria.edge.speed_gflops",
         "not a finite number", id="aeria-float-literal-that-overflows-to-inf"),
    case("validate", "aeria/quickstart", ["aeria.posted_price=1" + "0" * 400], "aeria.posted_price",
         "too large", id="aeria-integer-too-large-for-a-float"),
    case("sweep", "aeria/sweep", ["sweep.params.aeria.reserve_price={uniform: [0, .inf]}"],
         "sweep.params.aeria.reserve_price.uniform[1]", "not a finite number",
         id="aeria-sweep-uniform-bound-inf"),
    case("sweep", "aeria/sweep", ["sweep.params.aeria.consensus_base={grid: [2.0, .nan]}"],
         "sweep.params.aeria.consensus_base.grid[1]", "not a finite number",
         id="aeria-sweep-grid-value-nan"),
    case("validate", "deepfusion/quickstart", ["deepfusion.distill.alpha=.inf"],
         "deepfusion.distill.alpha", "not a finite number", id="deepfusion-inf-loss-weight"),
    case("run", "deepfusion/quickstart", ["deepfusion.federation.size_skew=-.inf"],
         "deepfusion.federation.size_skew", "-inf is not a finite number",
         id="deepfusion-minus-inf"),
    case("sweep", "deepfusion/sweep",
         ["sweep.params.deepfusion.distill.beta={loguniform: [1.0e-3, .inf]}"],
         "sweep.params.deepfusion.distill.beta.loguniform[1]", "not a finite number",
         id="deepfusion-sweep-loguniform-bound-inf"),
    case("validate", "prince/quickstart", ["prince.tenants.vit.budget=.inf"],
         "prince.tenants.vit.budget", "not a finite number", id="prince-infinite-budget"),
    case("run", "prince/quickstart", ["prince.market.psi=.nan"], "prince.market.psi",
         "nan is not a finite number", id="prince-nan"),
    case("sweep", "prince/sweep",
         ["sweep.params.prince.tenants.bert.price_max={uniform: [.nan, 4.0]}"],
         "sweep.params.prince.tenants.bert.price_max.uniform[0]", "not a finite number",
         id="prince-sweep-uniform-bound-nan"),
    case("sweep", "prince/sweep", ["sweep.gpus_per_trial=.inf"], "sweep.gpus_per_trial",
         "not a finite number", id="prince-sweep-section-inf"),
    case("validate", "robustness/quickstart", ["robustness.decoding.temperature=.inf"],
         "robustness.decoding.temperature", "not a finite number", id="robustness-inf"),
    case("run", "<nonfinite_yaml>", [], "robustness.models[0].num_cpus", "not a finite number",
         id="robustness-inf-written-in-the-yaml-file-inside-a-list-of-sections"),
    case("sweep", "robustness/quickstart",
         [*ROBUSTNESS_SWEEP, "sweep.params.robustness.decoding.top_p={grid: [0.5, .nan]}"],
         "sweep.params.robustness.decoding.top_p.grid[1]", "not a finite number",
         id="robustness-sweep-grid-value-nan"),
]

# --------------------------------------------------------------------------- 2. files of the wrong kind
WRONG_FILES = [
    case("validate", "aeria/quickstart", ["aeria.profiles=<folder>"], "aeria.profiles",
         "is a folder, not a file", "profiles JSON", id="aeria-profiles-is-a-folder"),
    case("run", "aeria/quickstart", ["aeria.profiles=<text>"], "aeria.profiles",
         "is not JSON", "dnns", id="aeria-profiles-is-not-json"),
    case("validate", "aeria/quickstart", ["aeria.profiles=<json_list>"], "aeria.profiles",
         "holds a JSON list, not an object", id="aeria-profiles-json-list"),
    case("run", "aeria/quickstart", ["aeria.profiles=<json_wrong_shape>"], "aeria.profiles",
         "not a profile table", "no field 'layers'", id="aeria-profiles-json-of-the-wrong-shape"),
    case("sweep", "aeria/sweep", ["aeria.profiles=<json_no_dnns>"], "aeria.profiles",
         "has no DNN profiles", id="aeria-profiles-empty-table"),
    case("validate", "aeria/quickstart", ["aeria.profiles=<latin1>"], "aeria.profiles",
         "is not UTF-8", id="aeria-profiles-latin1"),
    case("validate", "deepfusion/quickstart", ["deepfusion.models.pretrained_path=<text>"],
         "deepfusion.models.pretrained_path", "is a file, not a folder",
         id="deepfusion-text-file-where-a-model-folder-belongs"),
    case("run", "deepfusion/quickstart", ["deepfusion.models.pretrained_path=<empty_dir>"],
         "deepfusion.models.pretrained_path", "it is empty", "config.json",
         id="deepfusion-empty-model-folder"),
    case("validate", "deepfusion/quickstart", ["deepfusion.models.pretrained_path=<bad_hf>"],
         "deepfusion.models.pretrained_path", "config.json is not JSON",
         id="deepfusion-model-folder-with-a-broken-config-json"),
    case("sweep", "deepfusion/sweep", ["deepfusion.models.pretrained_path=<gguf_dir>",
                                       "deepfusion.models.pretrained_gguf_file=fake.gguf"],
         "deepfusion.models.pretrained_gguf_file", "not a GGUF file",
         id="deepfusion-gguf-without-the-gguf-magic"),
    case("validate", "prince/quickstart", ["prince.tenants.llama.pretrained=<text>"],
         "prince.tenants.llama.pretrained", "is a file, not model weights", ".gguf",
         id="prince-text-file-as-weights"),
    case("run", "prince/quickstart", ["prince.tenants.vit.pretrained=<empty_dir>"],
         "prince.tenants.vit.pretrained", "it is empty", id="prince-empty-model-folder"),
    case("sweep", "prince/sweep", ["prince.tenants.llama.pretrained=<gguf_dir>/fake.gguf"],
         "prince.tenants.llama.pretrained", "not a GGUF file", id="prince-fake-gguf"),
    case("validate", "prince/quickstart", ["prince.tenants.bert.pretrained=<list_hf>"],
         "prince.tenants.bert.pretrained", "holds a JSON list", id="prince-config-json-is-a-list"),
    case("validate", "robustness/quickstart", ["robustness.data_paths.flipkart=<csv_header_only>"],
         "robustness.data_paths.flipkart", "has no rows", id="robustness-csv-without-rows"),
    case("run", "robustness/quickstart", ["robustness.data_paths.anli=<empty_jsonl>"],
         "robustness.data_paths.anli", "has no rows", id="robustness-empty-jsonl"),
    case("validate", "robustness/quickstart", ["robustness.data_paths.advglue_sst2=<folder>"],
         "robustness.data_paths.advglue_sst2", "is a folder, not a file", "AdvGLUE dev.json",
         id="robustness-data-path-is-a-folder"),
    case("sweep", "robustness/quickstart",
         [*ROBUSTNESS_SWEEP, "sweep.params.robustness.prompt.variant={choice: [0, -1]}",
          "robustness.data_paths.advglue_t=<json_wrong_shape>"],
         "robustness.data_paths.advglue_t", "is not AdvGLUE-T translation.json",
         id="robustness-json-of-the-wrong-shape"),
    case("run", "robustness/quickstart", ["robustness.data_paths.ddxplus=<binary>"],
         "robustness.data_paths.ddxplus", "is a binary file", id="robustness-binary-data-file"),
    case("validate", "robustness/quickstart", ["robustness.data_paths.flipkart=<csv_wrong_columns>"],
         "robustness.data_paths.flipkart", "no field 'Summary'",
         id="robustness-csv-with-other-columns"),
    case("validate", "robustness/quickstart",
         ["robustness.models=[{name: m, kind: classifier, path: '<text>'}]"],
         "robustness.models[0].path", "is a file, not a folder",
         id="robustness-text-file-where-a-model-folder-belongs"),
    case("run", "robustness/quickstart",
         ["robustness.models=[{name: m, kind: generative, path: '<gguf_dir>', "
          "gguf_file: fake.gguf}]"],
         "robustness.models[0].gguf_file", "not a GGUF file", id="robustness-fake-gguf"),
    case("validate", "robustness/quickstart", ["robustness.cache_dir=<text>"],
         "robustness.cache_dir", "is a file, not a folder", id="robustness-cache-dir-is-a-file"),
    case("run", "aeria/quickstart", ["state_dir=<text>"], "state_dir",
         "is a file, not a folder", id="aeria-state-dir-is-a-file"),
]

# --------------------------------------------------------------------------- 3. encodings and sections
ENCODINGS_AND_SECTIONS = [
    case("validate", "<latin1_config>", [], "<latin1_config>", "is not UTF-8", "line 2",
         id="aeria-config-in-latin1"),
    case("run", "<binary_config>", [], "<binary_config>", "is a binary file",
         id="config-is-a-binary-file"),
    case("sweep", "<utf16_config>", [], "<utf16_config>", "is not UTF-8",
         id="deepfusion-config-in-utf16"),
    case("validate", "<folder>", [], "<folder>", "is a folder, not a config file",
         id="config-is-a-folder"),
    case("validate", "prince/quickstart", ["prince.tenants=[1,2]"], "prince.tenants",
         "expected a mapping, got list", id="prince-section-given-a-list"),
    case("run", "prince/quickstart", ["prince.tenants.vit=7"], "prince.tenants.vit",
         "expected a mapping, got int", id="prince-subsection-given-a-scalar"),
    case("sweep", "prince/sweep", ["prince.market=5"], "prince.market",
         "expected a mapping", id="prince-sweep-section-given-a-scalar"),
    case("run", "prince/quickstart", ["prince.training.server_workers=2",
                                      "prince.training.server_gpus=0.5"],
         "prince.training.server_gpus", "share a GPU", id="prince-nccl-ranks-sharing-a-gpu"),
    case("sweep", "aeria/sweep", ["sweep.params=[1,2]"], "sweep.params",
         "expected a mapping, got list", id="aeria-sweep-params-given-a-list"),
    case("run", "aeria/quickstart", ["aeria=3"], "aeria", "expected a mapping, got int",
         id="aeria-workload-section-given-a-scalar"),
    case("validate", "aeria/quickstart", ["aeria.user_counts.x=1"], "aeria.user_counts",
         "expected a list, got dict", id="aeria-list-given-a-mapping"),
    case("run", "<section_list_yaml>", [], "aeria", "expected a mapping, got list",
         id="aeria-section-written-as-a-list-in-the-yaml-file"),
    case("validate", "deepfusion/quickstart", ["ray=foo"], "ray",
         "expected a mapping, got str", id="deepfusion-ray-given-a-string"),
    case("sweep", "deepfusion/sweep", ["deepfusion.moe=[1]"], "deepfusion.moe",
         "expected a mapping, got list", id="deepfusion-sweep-section-given-a-list"),
    case("run", "robustness/quickstart", ["mlflow=[]"], "mlflow", "expected a mapping, got list",
         id="robustness-mlflow-given-a-list"),
    case("validate", "robustness/quickstart", ["robustness.prompt=[a]"], "robustness.prompt",
         "expected a mapping, got list", id="robustness-subsection-given-a-list"),
    case("sweep", "robustness/quickstart", [*ROBUSTNESS_SWEEP, "sweep=[]"], "sweep",
         "expected a mapping, got list", id="robustness-sweep-given-a-list"),
]

# --------------------------------------------------------------------------- 4. sweep axes
SWEEP_RULES = [
    case("sweep", "aeria/sweep",
         ["sweep.params.aeria.values.distribution={choice: [lognormal, uniform]}",
          "sweep.params.aeria.values.low={grid: [0.0, 3.0]}"],
         "sweep.params.aeria.values.low", "3.0", "aeria.values.distribution='uniform'",
         id="aeria-two-choice-axes-break-a-rule-only-together"),
    case("validate", "aeria/sweep",
         ["sweep.params.aeria.users.deadline_ms_low={grid: [5, 50]}",
          "sweep.params.aeria.users.deadline_ms_high={grid: [20, 100]}"],
         "sweep.params.aeria.users.deadline_ms_low", "50.0",
         "aeria.users.deadline_ms_high=20.0", id="aeria-low-and-high-grids-cross"),
    case("run", "aeria/sweep", ["sweep.params.aeria.users.deadline_ms_low={uniform: [50, 300]}"],
         "sweep.params.aeria.users.deadline_ms_low", "300", id="aeria-uniform-corner-alone"),
    case("sweep", "deepfusion/sweep",
         ["deepfusion.moe.num_experts=8", "sweep.params.deepfusion.moe.top_k={grid: [2, 6]}",
          "sweep.params.deepfusion.moe.num_experts={grid: [4, 8]}"],
         "sweep.params.deepfusion.moe.top_k", "6", "deepfusion.moe.num_experts=4",
         id="deepfusion-top-k-above-a-swept-expert-count"),
    case("validate", "deepfusion/sweep",
         ["sweep.params.deepfusion.vaa.queries={randint: [16, 32]}"],
         "sweep.params.deepfusion.vaa.queries", "17", "not a multiple",
         id="deepfusion-randint-interior-value-breaks-divisibility"),
    case("sweep", "deepfusion/sweep", ["sweep.params.deepfusion.vaa.heads={grid: [2, 32]}"],
         "sweep.params.deepfusion.vaa.dim", "16", "deepfusion.vaa.heads=32",
         id="deepfusion-heads-axis-against-the-dim-choice-axis"),
    case("sweep", "prince/sweep",
         ["prince.tenants.vit.price_max=5",
          "sweep.params.prince.tenants.vit.price_min={uniform: [0, 3]}",
          "sweep.params.prince.tenants.vit.price_max={uniform: [1, 5]}"],
         "sweep.params.prince.tenants.vit.price_min", "3",
         "prince.tenants.vit.price_max=1", id="prince-corners-of-two-uniform-axes"),
    case("run", "prince/sweep",
         ["prince.market.kappa_high=5", "sweep.params.prince.market.kappa_low={grid: [0.5, 3]}",
          "sweep.params.prince.market.kappa_high={grid: [2, 4]}"],
         "sweep.params.prince.market.kappa_low", "3.0", "prince.market.kappa_high=2.0",
         id="prince-kappa-grids-cross"),
    case("validate", "prince/sweep",
         ["prince.tenants.bert.lora_rank=8", "prince.tenants.bert.lora_alpha=16",
          "prince.tenants.bert.pretrained=auto",  # LoRA on a random base is refused on its own
          "sweep.params.prince.tenants.bert.lora_rank={grid: [0, 8]}",
          "sweep.params.prince.tenants.bert.lora_alpha={grid: [16.0, 32.0]}"],
         "sweep.params.prince.tenants.bert.lora_rank", "the value 0", "lora_alpha",
         id="prince-rank-zero-with-a-swept-alpha"),
    case("sweep", "robustness/quickstart",
         [*ROBUSTNESS_SWEEP, "robustness.models=[{name: m, kind: classifier, path: tiny}]",
          "sweep.params.robustness.tasks={choice: [[advglue_sst2], [advglue_t], [flipkart]]}"],
         "sweep.params.robustness.tasks", "['advglue_t']", "has no task to run",
         id="robustness-interior-choice-value-leaves-a-model-without-tasks"),
    case("validate", "robustness/quickstart",
         [*ROBUSTNESS_SWEEP, "robustness.models=[{name: m, kind: classifier, path: tiny}]",
          "sweep.params.robustness.tasks={grid: [[advglue_sst2, flipkart], [advglue_t]]}",
          "sweep.params.robustness.decoding.max_new_tokens={randint: [1, 40]}"],
         "sweep.params.robustness.tasks", "['advglue_t']",
         id="robustness-bad-grid-value-among-other-axes"),
]


# --------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("verb,config,overrides,key,texts", NON_FINITE)
def test_a_non_finite_number_is_refused_where_a_finite_one_is_meant(
        verb, config, overrides, key, texts, files, guard, capsys):
    _assert_one_config_error(verb, config, overrides, key, texts, files, guard, capsys)


@pytest.mark.parametrize("verb,config,overrides,key,texts", WRONG_FILES)
def test_a_named_file_of_the_wrong_kind_or_shape_is_refused_saying_what_belongs_there(
        verb, config, overrides, key, texts, files, guard, capsys):
    _assert_one_config_error(verb, config, overrides, key, texts, files, guard, capsys)


@pytest.mark.parametrize("verb,config,overrides,key,texts", ENCODINGS_AND_SECTIONS)
def test_a_non_utf8_config_or_a_section_given_as_a_list_or_scalar_is_one_error(
        verb, config, overrides, key, texts, files, guard, capsys):
    _assert_one_config_error(verb, config, overrides, key, texts, files, guard, capsys)


@pytest.mark.parametrize("verb,config,overrides,key,texts", SWEEP_RULES)
def test_sweep_values_and_combinations_that_break_a_rule_name_the_axes(
        verb, config, overrides, key, texts, files, guard, capsys):
    _assert_one_config_error(verb, config, overrides, key, texts, files, guard, capsys)


def test_a_sweep_whose_axes_are_only_valid_together_is_accepted(files, guard, capsys):
    """Each axis alone against the base value would break top_k <= num_experts (base K=4), but
    every point of the sweep is valid: the check builds real points, not one axis at a time."""
    overrides = ["sweep.params.deepfusion.moe.num_experts={grid: [8]}",
                 "sweep.params.deepfusion.moe.top_k={grid: [2, 8]}"]
    assert _cli("validate", "deepfusion/sweep", overrides, files, capsys) == (0, "")


def test_a_large_sweep_is_checked_by_corners_and_a_sample_in_seconds(files, guard, capsys):
    """Four choice axes of 6 values and a 999-wide randint: 10,368 points, too many to build."""
    import time

    axes = [f"sweep.params.aeria.{k}={{choice: [1, 2, 3, 4, 5, 6]}}"
            for k in ("posted_price", "reserve_price", "cost_plus_margin", "cost_share_target")]
    started = time.perf_counter()
    code, err = _cli("validate", "aeria/sweep",
                     [*axes, "sweep.params.aeria.num_users={randint: [2, 1000]}"], files, capsys)
    assert (code, err) == (0, "") and time.perf_counter() - started < 5


# --------------------------------------------------------------------------- helpers
def _assert_one_config_error(verb, config, overrides, key, texts, files, guard, capsys) -> None:
    code, err = _cli(verb, config, overrides, files, capsys)
    key = _fill(key, files)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: config error at '{key}'"), err
    for text in texts:
        assert text in err, f"{text!r} not in {err!r}"
    assert guard == [], f"started on bad input: {guard}"
    for written in ("mlflow.db", "state", ".orchestrator"):
        assert not (files["root"] / written).exists(), f"{written} was written on bad input"


def _cli(verb: str, config: str, overrides: list[str], files: dict, capsys) -> tuple[int, str]:
    """Run the CLI in-process with the store and state under tmp (given first, so a case's own
    overrides win) and return (exit status, stderr)."""
    path = _fill(config, files) if config.startswith("<") else \
        str(EXPERIMENTS / f"{config}.yaml")
    root = files["root"]
    base = [f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db", f"state_dir={root}/state"]
    capsys.readouterr()
    code = main([verb, path, *base, *(_fill(o, files) for o in overrides)])
    return code, capsys.readouterr().err.strip()


def _fill(text: str, files: dict) -> str:
    """'<name>' -> the path of that file of the `files` fixture."""
    return re.sub(r"<(\w+)>", lambda m: str(files[m.group(1)]), text)


@pytest.fixture
def files(tmp_path, monkeypatch) -> dict:
    """Work in an empty tmp folder holding one file or folder of each wrong kind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    bad = tmp_path / "inputs"
    made = {"root": tmp_path, "folder": bad / "a_folder", "empty_dir": bad / "empty",
            "gguf_dir": bad / "gguf", "bad_hf": bad / "bad_hf", "list_hf": bad / "list_hf"}
    for name in ("folder", "empty_dir", "gguf_dir", "bad_hf", "list_hf"):
        made[name].mkdir(parents=True)
    contents = {
        "text": "hello\n", "json_list": "[1, 2]", "json_no_dnns": '{"dnns": {}}',
        "json_wrong_shape": json.dumps({"dnns": {"x": {"dataset": "c"}}}),
        "csv_header_only": "Summary,Sentiment\n", "csv_wrong_columns": "a,b\n1,2\n",
        "empty_jsonl": "\n",
        "nonfinite_yaml": "workload: robustness\nrobustness:\n  models:\n"
                          "    - {name: ChatGPT, kind: stored, num_cpus: .inf}\n",
        "section_list_yaml": "workload: aeria\naeria: [1, 2]\n",
    }
    for name, text in contents.items():
        made[name] = bad / name
        made[name].write_text(text, encoding="utf-8")
    blobs = {"latin1": "caf\xe9".encode("latin-1"), "binary": b"\x7fELF\x02\x01\x00\x00\xff",
             "latin1_config": "workload: aeria\n# caf\xe9\n".encode("latin-1"),
             "binary_config": b"\x00\x01\x02workload: aeria\n",
             "utf16_config": "workload: deepfusion\n".encode("utf-16")}
    for name, data in blobs.items():
        made[name] = bad / name
        made[name].write_bytes(data)
    (made["gguf_dir"] / "fake.gguf").write_bytes(b"NOPE" + bytes(12))
    (made["bad_hf"] / "config.json").write_text("{not json")
    (made["list_hf"] / "config.json").write_text("[]")
    return {k: (v if k == "root" else str(v)) for k, v in made.items()}


@pytest.fixture
def guard(monkeypatch) -> list[str]:
    """Record (and refuse) any attempt to start Ray or open an MLflow run."""
    started: list[str] = []
    refuse_starts(monkeypatch, started)
    return started
