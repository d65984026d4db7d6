"""cluster/kuberay/: every manifest inside the KubeRay v1 CRD fields it uses (kuberay_v1_fields.py),
in-tree autoscaling with GPU worker groups, one RayJob per workload that runs its paper experiment
and deletes its cluster, each cluster sized for its paper experiment by Ray's autoscaler code, and
the security rules. Parses files only: no Kubernetes, no network."""
from __future__ import annotations

import re

import pytest
import yaml

from cluster_fit import PAPER, REPO, fits_per_gpu, launch_plan, load_paper, paper_stages
from kuberay_v1_fields import KINDS, violations

KUBERAY = REPO / "cluster" / "kuberay"
MANIFESTS = sorted(p.name for p in KUBERAY.glob("*.yaml"))
CORE_KINDS = {("v1", "PersistentVolumeClaim"), ("v1", "Pod"),
              ("networking.k8s.io/v1", "NetworkPolicy")}
# workload -> what its RayJob's entrypoint runs (deepfusion: both cases' N sweeps, Table I)
RAYJOBS = {  # state_dir on the shared volume: Ray Train checkpoints and --resume span pods and jobs
    "aeria": ["python -m orchestrator run experiments/aeria/paper.yaml state_dir=/state"],
    "deepfusion": ["python -m orchestrator sweep experiments/deepfusion/medical.yaml state_dir=/state",
                   "python -m orchestrator sweep experiments/deepfusion/financial.yaml "
                   "state_dir=/state"],
    "prince": ["python -m orchestrator run experiments/prince/paper.yaml state_dir=/state"],
    "robustness": ["python -m orchestrator run experiments/robustness/paper.yaml state_dir=/state"],
}
SECRET_NAME = re.compile(r"(?i)(key|token|secret|password|passwd|credential|store_uri)")


def load(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((KUBERAY / name).read_text()))
    return doc


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def ray_clusters() -> dict[str, dict]:
    return {n: cluster_spec(d) for n in MANIFESTS if (d := load(n))["apiVersion"] == "ray.io/v1"}


def pod_specs(spec: dict) -> list[dict]:
    return [g["template"]["spec"] for g in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]]


def quantity(q) -> float:
    q = str(q)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def ray_resources(group: dict) -> dict:
    """The Ray resources KubeRay gives the group's pods: num-cpus/num-gpus from rayStartParams,
    else the Ray container's (the first container's) CPU and nvidia.com/gpu limits."""
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    params = group["rayStartParams"]
    return {"CPU": int(quantity(params.get("num-cpus", limits["cpu"]))),
            "GPU": int(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))}


def node_types(spec: dict) -> tuple[dict, int]:
    """The RayCluster as the autoscaler sees it: node types and the global worker cap."""
    types = {"head": {"resources": ray_resources(spec["headGroupSpec"]), "max_workers": 0}}
    for g in spec["workerGroupSpecs"]:
        types[g["groupName"]] = {"resources": ray_resources(g), "min_workers": g["minReplicas"],
                                 "max_workers": g["maxReplicas"]}
    return types, sum(g["maxReplicas"] for g in spec["workerGroupSpecs"])


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_uses_only_fields_of_its_kind(name):
    doc = load(name)
    key = (doc["apiVersion"], doc["kind"])
    if key in KINDS:
        assert violations(doc, KINDS[key], doc["kind"]) == []
    else:
        assert key in CORE_KINDS, f"{name}: unexpected {key}"


def test_the_field_check_rejects_what_the_crd_lacks():
    doc = load("rayjob-prince.yaml")
    doc["spec"]["submissionMode"] = "K8sJobMode"                          # added after KubeRay 1.0
    doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["idleTimeoutSeconds"] = 60
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]
    head["rayStartParams"]["num-cpus"] = 0                                  # not a string
    found = violations(doc, KINDS[("ray.io/v1", "RayJob")], "RayJob")
    assert len(found) == 3, found


def test_raycluster_autoscales_in_tree_and_has_gpu_worker_groups():
    spec = load("raycluster.yaml")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpus = {g["groupName"]: ray_resources(g)["GPU"] for g in spec["workerGroupSpecs"]}
    assert gpus == {"cpu": 0, "gpu4": 4, "gpu8": 8}


@pytest.mark.parametrize("name", sorted(ray_clusters()))
def test_groups_scale_from_zero_and_gpu_pods_request_whole_nvidia_gpus(name):
    spec = ray_clusters()[name]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] == 0 and g.get("replicas", 0) == 0, g["groupName"]
        resources = g["template"]["spec"]["containers"][0]["resources"]
        assert resources["limits"] == resources["requests"], g["groupName"]   # Guaranteed QoS
        if "nvidia.com/gpu" in resources["limits"]:
            tolerations = g["template"]["spec"]["tolerations"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists",
                    "effect": "NoSchedule"} in tolerations
            assert {"name": "dshm", "mountPath": "/dev/shm"} in \
                g["template"]["spec"]["containers"][0]["volumeMounts"]


@pytest.mark.parametrize("workload", RAYJOBS)
def test_rayjob_runs_its_workloads_paper_experiment_then_deletes_its_cluster(workload):
    doc = load(f"rayjob-{workload}.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayJob")
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    steps = [s.strip() for s in doc["spec"]["entrypoint"].split("&&")]
    assert steps == ["cd /home/ray/edge-orchestrator", *RAYJOBS[workload]]
    for step in RAYJOBS[workload]:
        assert (REPO / step.split()[4]).is_file(), step


def ray_pods(doc: dict) -> list[dict]:
    spec = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    return [spec["headGroupSpec"]["template"]["spec"],
            *(g["template"]["spec"] for g in spec["workerGroupSpecs"])]


@pytest.mark.parametrize("name", ["raycluster.yaml", *(f"rayjob-{w}.yaml" for w in RAYJOBS)])
def test_every_ray_pod_mounts_the_shared_state_volume_at_slash_state(name):
    for pod in ray_pods(load(name)):
        assert {"name": "state", "mountPath": "/state"} in pod["containers"][0]["volumeMounts"]
        assert {"name": "state", "persistentVolumeClaim": {"claimName": "orchestrator-state"}} \
            in pod["volumes"]
    claim = load("state-store.yaml")
    assert (claim["kind"], claim["metadata"]["name"]) == ("PersistentVolumeClaim",
                                                         "orchestrator-state")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "GPU pods write, the head reads"


@pytest.mark.parametrize("experiment", PAPER)
def test_each_paper_experiment_fits_its_rayjob_and_the_raycluster(experiment):
    """Ray's autoscaler places the experiment on its RayJob's cluster (with one worker of the GPU
    count sized for it) and on the long-lived RayCluster; every stage fits GPU by GPU."""
    cfg = load_paper(experiment)
    stages = paper_stages(cfg)
    for name in (f"rayjob-{cfg.workload}.yaml", "raycluster.yaml"):
        types, max_workers = node_types(cluster_spec(load(name)))
        launched, unplaced = launch_plan(types, "head", max_workers, stages)
        assert not unplaced, f"{experiment} does not fit {name}: {unplaced}"
        assert sum(launched.values()) == 1, (name, launched)
        (group,) = launched
        assert types[group]["resources"]["GPU"] == PAPER[experiment], name
        if cfg.ray.num_gpus:
            assert types[group]["resources"] == {"CPU": cfg.ray.num_cpus, "GPU": cfg.ray.num_gpus}
        nodes = [types[g]["resources"] for g in launched.elements()]
        assert all(fits_per_gpu(nodes, stage) for stage in stages), name


def test_each_rayjob_cluster_has_only_the_groups_its_experiments_use():
    for workload in RAYJOBS:
        groups = cluster_spec(load(f"rayjob-{workload}.yaml"))["workerGroupSpecs"]
        gpus = {PAPER[e] for e in PAPER if e.startswith(f"{workload}/")}
        assert [ray_resources(g)["GPU"] for g in groups] == sorted(gpus), workload
        assert all(g["maxReplicas"] == 1 for g in groups), workload


@pytest.mark.parametrize("name", sorted(ray_clusters()))
def test_dashboard_on_localhost_unless_exposed_to_the_cluster_network_only(name):
    """The long-lived RayCluster keeps the dashboard on 127.0.0.1 (kubectl port-forward reaches it).
    A RayJob's operator and submitter reach the job API through the head Service, so RayJobs
    bind it beyond localhost explicitly: a ClusterIP Service, no ingress, the NetworkPolicy."""
    head = ray_clusters()[name]["headGroupSpec"]
    host = head["rayStartParams"]["dashboard-host"]          # never left to KubeRay's default
    assert head["serviceType"] == "ClusterIP" and not head.get("enableIngress", False)
    if name == "raycluster.yaml":
        assert host == "127.0.0.1"
    else:
        assert host in ("127.0.0.1", "0.0.0.0")
        policy = load("networkpolicy.yaml")
        assert policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
        assert policy["spec"]["policyTypes"] == ["Ingress"]


def all_containers():
    for name in MANIFESTS:
        doc = load(name)
        if doc["kind"] in ("RayCluster", "RayJob"):
            for pod in pod_specs(cluster_spec(doc)):
                yield name, pod, pod["containers"]
        elif doc["kind"] == "Pod":
            yield name, doc["spec"], doc["spec"]["containers"]


def test_mlflow_listens_on_localhost_and_ray_heads_log_to_it():
    servers = 0
    for name, _, containers in all_containers():
        for c in containers:
            command = " ".join(c.get("command", []) + c.get("args", []))
            if "mlflow server" in command:
                servers += 1
                assert "--host 127.0.0.1" in command and "0.0.0.0" not in command, name
    assert servers == len(ray_clusters()) + 1        # one sidecar per head, plus mlflow-ui
    for name, spec in ray_clusters().items():
        env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "MLFLOW_TRACKING_URI", "value": "http://127.0.0.1:5000"} in env, name


def test_secrets_reach_pods_only_through_secret_key_refs():
    for name, _, containers in all_containers():
        for c in containers:
            for var in c.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], \
                        (name, var["name"])
    assert all(load(n)["kind"] != "Secret" for n in MANIFESTS)


def test_every_pod_runs_the_project_image_with_ray_first():
    for name, pod, containers in all_containers():
        assert {c["image"] for c in containers} == {"edge-orchestrator:0.1.0"}, name
    for name, spec in ray_clusters().items():
        assert spec["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray-head"
        assert all(g["template"]["spec"]["containers"][0]["name"] == "ray-worker"
                   for g in spec["workerGroupSpecs"]), name
