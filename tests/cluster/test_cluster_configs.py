"""cluster/ launcher configs: Ray's own validation, the hardware behind each node type, each paper
experiment placed by Ray's autoscaler code, and the security rules (localhost-only dashboard and
MLflow, no secret in any file). Parses files only: no cluster, no cloud, no network."""
from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster_fit import PAPER, REPO, fits_per_gpu, launch_plan, load_paper, paper_stages

CLUSTER = REPO / "cluster"
LAUNCHERS = ("aws", "gcp", "onprem")
CLOUDS = ("aws", "gcp")          # node types declare resources; on-prem Ray detects each machine's
RAY_VERSION = "2.60.0"

# vCPUs and GPUs of the instance types used, from the providers' instance pages:
# aws.amazon.com/ec2/instance-types/{r6i,m6i,g5,p4} and cloud.google.com/compute/docs/
# {memory-optimized-machines, general-purpose-machines, gpus#a100-gpus, gpus#l4-gpus}
HARDWARE = {"r6i.4xlarge": (16, 0), "m6i.2xlarge": (8, 0), "g5.12xlarge": (48, 4),
            "p4d.24xlarge": (96, 8), "n2-highmem-16": (16, 0), "n2-standard-8": (8, 0),
            "g2-standard-48": (48, 4), "a2-highgpu-8g": (96, 8)}


def raw(name: str) -> dict:
    return yaml.safe_load((CLUSTER / f"{name}.yaml").read_text())


def prepare(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config

    return prepare_config(copy.deepcopy(config))


def prepared(name: str) -> dict:
    """The config as `ray up` has it after its offline steps (defaults merged, node types
    filled in; for `local`, the single on-prem node type)."""
    return prepare(raw(name))


def instance_type(node_config: dict) -> str:
    return node_config.get("InstanceType") or node_config["machineType"]


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_own_validation(name):
    """What `ray up` checks before it calls a cloud: the file against Ray's JSON schema
    (ray/autoscaler/ray-schema.json), then `prepare_config` + `validate_config` (the schema again
    on the merged config, head type present, global max_workers >= the sum of min_workers)."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw(name), schema)
    validate_config(prepared(name))


def test_rays_validation_rejects_a_misspelt_key_and_a_fractional_resource():
    import jsonschema
    from ray.autoscaler._private.util import validate_config

    misspelt = dict(raw("aws"), max_worker=4)
    fractional = copy.deepcopy(raw("aws"))
    fractional["available_node_types"]["ray.worker.gpu4"]["resources"]["GPU"] = 3.5
    for config in (misspelt, fractional):
        with pytest.raises(jsonschema.ValidationError):
            validate_config(prepare(config))


def test_aws_node_configs_are_valid_ec2_run_instances_requests():
    """AWS node_config goes to EC2 RunInstances as is: botocore's own model of that call accepts
    every key, and every InstanceType is one EC2 knows."""
    import botocore.session
    from botocore.validate import validate_parameters

    run = botocore.session.get_session().get_service_model("ec2").operation_model("RunInstances")
    for node_type in raw("aws")["available_node_types"].values():
        validate_parameters(dict(node_type["node_config"], MinCount=1, MaxCount=1),
                            run.input_shape)
        assert node_type["node_config"]["InstanceType"] in \
            run.input_shape.members["InstanceType"].enum


@pytest.mark.parametrize("cloud", CLOUDS)
def test_node_types_advertise_no_more_than_their_hardware(cloud):
    for name, node_type in raw(cloud)["available_node_types"].items():
        vcpus, gpus = HARDWARE[instance_type(node_type["node_config"])]
        assert node_type["resources"]["CPU"] <= vcpus, name
        assert node_type["resources"].get("GPU", 0) in (0, gpus), name


@pytest.mark.parametrize("cloud", CLOUDS)
def test_head_runs_no_experiment_work_and_workers_scale_from_zero(cloud):
    config = raw(cloud)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    workers = [t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]]
    assert all(t["min_workers"] == 0 for t in workers)
    assert config["max_workers"] == sum(t["max_workers"] for t in workers)


def test_onprem_head_advertises_no_cpu():
    assert "--num-cpus=0" in " ".join(raw("onprem")["head_start_ray_commands"])


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("experiment", PAPER)
def test_paper_experiment_fits_on_one_node_of_the_type_sized_for_it(cloud, experiment):
    """Ray's autoscaler, given the experiment's resource bundles stage by stage, launches exactly
    one worker of the type with the paper's GPU count, whose advertised CPUs/GPUs cover the
    paper's `ray:` section, and every stage also fits GPU by GPU."""
    cfg, config = load_paper(experiment), prepared(cloud)
    if cfg.sweep.params:
        assert cfg.sweep.max_concurrent_trials == 1, "a paper sweep fills the cluster per trial"
    types, stages = config["available_node_types"], paper_stages(cfg)
    launched, unplaced = launch_plan(types, config["head_node_type"], config["max_workers"],
                                     stages)
    assert not unplaced, f"{experiment} cannot be placed on {cloud}: {unplaced}"
    assert sum(launched.values()) == 1, launched
    (node_type,) = launched
    resources = types[node_type]["resources"]
    assert resources.get("GPU", 0) == PAPER[experiment]
    assert resources["CPU"] >= cfg.ray.num_cpus and resources.get("GPU", 0) >= cfg.ray.num_gpus
    if cfg.ray.num_gpus:      # a GPU node type is the paper's machine, exactly
        assert resources == {"CPU": cfg.ray.num_cpus, "GPU": cfg.ray.num_gpus}
    nodes = [types[t]["resources"] for t in launched.elements()]
    assert all(fits_per_gpu(nodes, stage) for stage in stages)


def test_gpu_nodes_advertising_every_vcpu_would_split_deepfusion_over_two_node_types():
    """Why the GPU node types advertise the paper's 32 CPUs rather than all their vCPUs: Ray's
    scorer would then start a g5.12xlarge for five of DeepFusion's 0.75-GPU actors and a
    p4d.24xlarge for the rest, mixing A10G and A100 devices."""
    config = prepared("aws")
    types = copy.deepcopy(config["available_node_types"])
    for node_type in types.values():
        vcpus, gpus = HARDWARE[instance_type(node_type["node_config"])]
        if gpus:
            node_type["resources"]["CPU"] = vcpus
    launched, _ = launch_plan(types, config["head_node_type"], config["max_workers"],
                              paper_stages(load_paper("deepfusion/medical.yaml")))
    assert set(launched) == {"ray.worker.gpu4", "ray.worker.gpu8"}


@pytest.mark.parametrize("name", LAUNCHERS)
def test_dashboard_and_mlflow_listen_on_localhost(name):
    config = raw(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in head
    assert config["head_start_ray_commands"][-1] == \
        "bash ~/edge-orchestrator/cluster/start_mlflow.sh"
    assert "0.0.0.0" not in (CLUSTER / f"{name}.yaml").read_text()
    script = (CLUSTER / "start_mlflow.sh").read_text()
    assert '--host "${MLFLOW_HOST:-127.0.0.1}"' in script and "0.0.0.0" not in script


@pytest.mark.parametrize("name", LAUNCHERS)
def test_nodes_install_torch_then_deepspeed_then_the_package(name):
    """setup_commands run cluster/install.sh, which installs in setup.sh's order: torch (CUDA build
    on GPU nodes) at the lock's version, DeepSpeed with --no-build-isolation, then this package
    editable, both constrained by requirements.lock."""
    assert raw(name)["setup_commands"] == [
        "bash ~/edge-orchestrator/cluster/install.sh ~/edge-orchestrator"]
    assert raw(name)["file_mounts"] == {"~/edge-orchestrator": "."}
    script = (CLUSTER / "install.sh").read_text()
    steps = [script.index(s) for s in ('pip_install "torch==$TORCH_VERSION"',
                                       '--no-build-isolation deepspeed',
                                       'pip_install -c "$LOCK" -e "$REPO"')]
    assert steps == sorted(steps)
    torch_pin = re.search(r'TORCH_VERSION="([^"]+)"', script).group(1)
    assert f"\ntorch=={torch_pin}  #" in (REPO / "requirements.lock").read_text()


def test_one_ray_version_across_cluster_files():
    """Launcher images, KubeRay rayVersion and the Dockerfile's base all name the same Ray, the
    version whose schema these tests validate against."""
    import ray

    assert ray.__version__ == RAY_VERSION
    text = "\n".join(p.read_text() for p in sorted(CLUSTER.rglob("*")) if p.is_file())
    assert set(re.findall(r"rayproject/ray:([\d.]+)", text)) == {RAY_VERSION}
    assert set(re.findall(r'rayVersion: "([^"]+)"', text)) == {RAY_VERSION}


SECRET_LITERALS = {
    "AWS access key id": r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
    "AWS secret key setting": r"(?i)aws_secret_access_key\s*[:=]\s*\S",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "API token": r"\b(sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{30,}|hf_[A-Za-z0-9]{30,}|xox[bp]-\S+)",
    "password in a URI": r"://[^/\s:@$]+:[^@\s/$]+@",
    "password setting":
        r"(?i)\b(password|passwd|secret|token|api_key)\b\s*[:=]\s*['\"]?[A-Za-z0-9/+]{8,}",
    "GCP service-account key": r'"private_key_id"\s*:',
}


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix()
                                        for p in CLUSTER.rglob("*") if p.is_file()))
def test_no_secret_literal_in_cluster_files(path):
    text = (REPO / path).read_text()
    found = {what: m.group(0) for what, pattern in SECRET_LITERALS.items()
             if (m := re.search(pattern, text))}
    assert not found, f"{path}: {found}; secrets come from the environment or a k8s secret"


def test_secret_scan_catches_the_literals_it_looks_for():
    samples = ["AKIAABCDEFGHIJKLMNOP", "aws_secret_access_key = abc",
               "postgresql://mlflow:hunter2hunter@db:5432/mlflow", "password: Sup3rS3cretValue",
               "sk-abcdefghijklmnopqrstuvwxyz"]
    for sample in samples:
        assert any(re.search(p, sample) for p in SECRET_LITERALS.values()), sample
    assert not any(re.search(p, "postgresql://USER@HOST:5432/mlflow ${MLFLOW_BACKEND_STORE_URI}")
                   for p in SECRET_LITERALS.values())


@pytest.mark.parametrize("script", ["install.sh", "start_mlflow.sh"])
def test_cluster_scripts_parse_as_bash(script):
    assert subprocess.run(["bash", "-n", str(CLUSTER / script)]).returncode == 0
