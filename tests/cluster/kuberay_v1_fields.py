"""The KubeRay `ray.io/v1` fields cluster/kuberay/ may use, and a checker of manifests against them.

Copied by hand from the CRDs' openAPIV3Schema (version `v1`) in
    ray-project/kuberay @ 1184bc872c0801e59c18caf8a1a4eb5f2800ce93
    ray-operator/config/crd/bases/ray.io_rayclusters.yaml    (kind RayCluster)
    ray-operator/config/crd/bases/ray.io_rayjobs.yaml        (kind RayJob)
That is the KubeRay 1.0 generation of the CRDs, the first to serve ray.io/v1; later operators only
add fields, so a manifest inside this list applies to every v1 operator. It has no RayJob
`submissionMode`/`backoffLimit`/`activeDeadlineSeconds` and no worker-group `idleTimeoutSeconds`
or `suspend`, so the manifests do without them. Pod templates embed Kubernetes core/v1 types; only
the fields the manifests use are listed, each one read in the same CRD. `required` lists are the
CRD's `required:` lists for those objects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# leaves: the CRD's `type:` of the field
STR, INT, BOOL, NUMBER = "string", "integer", "boolean", "number"
STRS = "array of string"
QUANTITY = "quantity"        # anyOf integer | string, x-kubernetes-int-or-string
STR_MAP = "map of string"    # additionalProperties: {type: string}
QUANTITY_MAP = "map of quantity"


@dataclass(frozen=True)
class Obj:
    fields: dict[str, Any]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListOf:
    item: Any


RESOURCES = Obj({"limits": QUANTITY_MAP, "requests": QUANTITY_MAP})
KEY_REF = Obj({"name": STR, "key": STR, "optional": BOOL}, required=("key",))
ENV = ListOf(Obj({"name": STR, "value": STR,
                  "valueFrom": Obj({"secretKeyRef": KEY_REF, "configMapKeyRef": KEY_REF})},
                 required=("name",)))
CONTAINER = Obj({
    "name": STR, "image": STR, "imagePullPolicy": STR, "command": STRS, "args": STRS,
    "workingDir": STR, "env": ENV, "resources": RESOURCES,
    "ports": ListOf(Obj({"containerPort": INT, "name": STR, "protocol": STR},
                        required=("containerPort",))),
    "volumeMounts": ListOf(Obj({"name": STR, "mountPath": STR, "readOnly": BOOL, "subPath": STR},
                               required=("mountPath", "name"))),
    "lifecycle": Obj({"preStop": Obj({"exec": Obj({"command": STRS})})}),
}, required=("name",))
VOLUME = Obj({
    "name": STR,
    "emptyDir": Obj({"medium": STR, "sizeLimit": QUANTITY}),
    "persistentVolumeClaim": Obj({"claimName": STR, "readOnly": BOOL}, required=("claimName",)),
}, required=("name",))
POD_TEMPLATE = Obj({
    "metadata": Obj({"labels": STR_MAP, "annotations": STR_MAP}),
    "spec": Obj({
        "containers": ListOf(CONTAINER), "volumes": ListOf(VOLUME), "nodeSelector": STR_MAP,
        "serviceAccountName": STR,
        "tolerations": ListOf(Obj({"key": STR, "operator": STR, "value": STR, "effect": STR})),
    }, required=("containers",)),
})
AUTOSCALER_OPTIONS = Obj({"idleTimeoutSeconds": INT, "upscalingMode": STR, "image": STR,
                          "imagePullPolicy": STR, "resources": RESOURCES, "env": ENV})
HEAD_GROUP = Obj({"serviceType": STR, "enableIngress": BOOL, "rayStartParams": STR_MAP,
                  "template": POD_TEMPLATE}, required=("rayStartParams", "template"))
WORKER_GROUP = Obj({"groupName": STR, "replicas": INT, "minReplicas": INT, "maxReplicas": INT,
                    "rayStartParams": STR_MAP, "template": POD_TEMPLATE},
                   required=("groupName", "maxReplicas", "minReplicas", "rayStartParams",
                             "template"))
RAY_CLUSTER_SPEC = Obj({
    "rayVersion": STR, "enableInTreeAutoscaling": BOOL, "autoscalerOptions": AUTOSCALER_OPTIONS,
    "headGroupSpec": HEAD_GROUP, "workerGroupSpecs": ListOf(WORKER_GROUP),
    "headServiceAnnotations": STR_MAP,
}, required=("headGroupSpec",))
RAY_JOB_SPEC = Obj({
    "entrypoint": STR, "entrypointNumCpus": NUMBER, "entrypointNumGpus": NUMBER, "jobId": STR,
    "runtimeEnvYAML": STR, "metadata": STR_MAP, "clusterSelector": STR_MAP,
    "shutdownAfterJobFinishes": BOOL, "ttlSecondsAfterFinished": INT, "suspend": BOOL,
    "rayClusterSpec": RAY_CLUSTER_SPEC,
}, required=("entrypoint",))
OBJECT_META = Obj({"name": STR, "namespace": STR, "labels": STR_MAP, "annotations": STR_MAP})


def _kind(spec: Obj) -> Obj:
    return Obj({"apiVersion": STR, "kind": STR, "metadata": OBJECT_META, "spec": spec},
               required=("apiVersion", "kind", "metadata", "spec"))


KINDS = {("ray.io/v1", "RayCluster"): _kind(RAY_CLUSTER_SPEC),
         ("ray.io/v1", "RayJob"): _kind(RAY_JOB_SPEC)}


def violations(value: Any, schema: Any, path: str = "") -> list[str]:
    """Every place where `value` uses a field the schema does not have or a value of the wrong
    type, as 'path: problem' lines; empty when the manifest stays inside the CRD."""
    if isinstance(schema, Obj):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        out = [f"{path}.{k}: not a field of the KubeRay v1 CRD here" for k in value
               if k not in schema.fields]
        out += [f"{path}.{k}: required by the CRD" for k in schema.required if k not in value]
        for k, v in value.items():
            if k in schema.fields:
                out += violations(v, schema.fields[k], f"{path}.{k}")
        return out
    if isinstance(schema, ListOf):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [p for i, item in enumerate(value) for p in violations(item, schema.item,
                                                                      f"{path}[{i}]")]
    return [] if _is(value, schema) else [f"{path}: {value!r} is not a {schema}"]


def _is(value: Any, kind: str) -> bool:
    if kind == STR:
        return isinstance(value, str)
    if kind == BOOL:
        return isinstance(value, bool)
    if kind == INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == QUANTITY:
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if kind == STRS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == STR_MAP:
        return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
    if kind == QUANTITY_MAP:
        return isinstance(value, dict) and all(_is(v, QUANTITY) for v in value.values())
    raise ValueError(f"unknown leaf kind {kind}")
