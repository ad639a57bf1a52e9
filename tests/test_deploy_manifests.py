"""Kubernetes and KServe manifests under deploy/, validated offline.

Core kinds go through ``kubernetes-validate``'s strict schemas (unknown fields are errors).
KServe's kinds and the Prometheus Operator's PodMonitor are CRDs: their top-level fields are
checked against schemas written down below from the published CRDs
(serving.kserve.io_clusterservingruntimes / _inferenceservices, monitoring.coreos.com_podmonitors),
and the containers and volumes inside them against the strict core ``Container`` and ``Volume``
schemas, since KServe copies them into the pods it creates. Then the cross-references a cluster
would only reveal at run time: flags the server takes, named ports, labels, metric names.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml

from kernel._cli import build_parser
from kernel._serve_command import options_from_args
from kernel.testing import ServerThread

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
KSERVE = ROOT / "deploy" / "kserve"
KUBERNETES_VERSION = "1.33"
SCHEMAS = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in _docs(path) if d["kind"] == kind]
    return doc


def _core_validator(definition: str) -> jsonschema.Draft202012Validator:
    """The strict schema of one core type (e.g. ``container-v1``) with its references."""
    folder = resources.files(kubernetes_validate) / SCHEMAS
    schema = json.loads((folder / f"{definition}.json").read_text())
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry: referencing.Registry[Any] = (
        referencing.Resource.from_contents(definitions) @ referencing.Registry()
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _serve_options(args: list[str]) -> Any:
    """What ``kernel serve`` makes of a manifest's arguments (they must all be accepted)."""
    assert args[:2] == ["kernel", "serve"], args
    parsed, unknown = build_parser().parse_known_args(args[1:])
    assert unknown == [], unknown
    return options_from_args(parsed)


# --- plain Kubernetes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["deployment.yaml", "service.yaml", "hpa.yaml", "prometheus-adapter-rules.yaml"],
)
def test_core_kinds_validate_strictly(name: str) -> None:
    for doc in _docs(K8S / name):
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_one(K8S / "kustomization.yaml", "Kustomization")["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def _deployment() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = _one(K8S / "deployment.yaml", "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_deployment_probes_triton_health_routes_on_a_declared_port() -> None:
    _, container = _deployment()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    options = _serve_options(container["args"])
    assert (ports["http"], ports["grpc"], ports["metrics"]) == (
        options.http_port,
        options.grpc_port,
        options.metrics_port,
    )
    assert options.host == "0.0.0.0"
    assert [str(p) for p in options.model_repositories] == ["/models"]
    probes = {k: container[k]["httpGet"] for k in ("startupProbe", "readinessProbe")}
    probes["livenessProbe"] = container["livenessProbe"]["httpGet"]
    assert probes["startupProbe"]["path"] == "/v2/health/ready"
    assert probes["readinessProbe"]["path"] == "/v2/health/ready"
    assert probes["livenessProbe"]["path"] == "/v2/health/live"
    assert {p["port"] for p in probes.values()} == {"http"}
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]


def test_grace_period_covers_the_drain() -> None:
    pod, container = _deployment()
    drain = _serve_options(container["args"]).exit_timeout_secs
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 5


def test_dev_shm_is_memory_backed() -> None:
    pod, container = _deployment()
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    assert volume["emptyDir"]["sizeLimit"]


def test_service_and_podmonitor_select_the_pods_and_name_their_ports() -> None:
    pod_labels = _one(K8S / "deployment.yaml", "Deployment")["spec"]["template"]["metadata"][
        "labels"
    ]
    _, container = _deployment()
    port_names = {p["name"] for p in container["ports"]}
    service = _one(K8S / "service.yaml", "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == port_names
    monitor = _one(K8S / "podmonitor.yaml", "PodMonitor")
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


def _adapter_rule() -> dict[str, Any]:
    config = yaml.safe_load(
        _one(K8S / "prometheus-adapter-rules.yaml", "ConfigMap")["data"]["config.yaml"]
    )
    (rule,) = config["rules"]
    return dict(rule)


def test_hpa_scales_the_deployment_on_the_adapter_metric() -> None:
    hpa = _one(K8S / "hpa.yaml", "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "triton-kernel"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == _adapter_rule()["name"]["as"]


def test_adapter_rule_reads_metrics_the_server_exports(
    repo: Path,
    add_model: Callable[..., Path],
    kt_config: Callable[..., str],
) -> None:
    import numpy as np

    rule = _adapter_rule()
    queried = set(re.findall(r"\b(nv_[a-z_]+)\{", rule["seriesQuery"] + rule["metricsQuery"]))
    assert queried == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert {"<<.LabelMatchers>>", "<<.GroupBy>>"} <= set(
        re.findall(r"<<\.\w+>>", rule["metricsQuery"])
    )
    add_model(repo, "m", kt_config())
    with ServerThread(repo, grpc_port=None) as running:
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(running.http_url)
        try:
            item = httpclient.InferInput("INPUT0", [1, 4], "FP32")
            item.set_data_from_numpy(np.ones((1, 4), np.float32))
            other = httpclient.InferInput("INPUT1", [1, 4], "FP32")
            other.set_data_from_numpy(np.ones((1, 4), np.float32))
            client.infer("m", [item, other])
        finally:
            client.close()
        with urllib.request.urlopen(f"http://{running.metrics_url}/metrics", timeout=10) as r:
            text = r.read().decode()
    samples = {line.split("{", 1)[0] for line in text.splitlines() if line.startswith("nv_")}
    assert queried <= samples


# --- KServe -----------------------------------------------------------------------------------

# From serving.kserve.io_clusterservingruntimes (v1alpha1), the fields of ServingRuntimeSpec;
# containers, volumes and the other pod fields are checked against the core schemas below.
_MODEL_FORMAT = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
}
_PROTOCOLS = {"type": "string", "enum": ["v1", "v2", "grpc-v1", "grpc-v2"]}
SERVING_RUNTIME_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"enum": ["ClusterServingRuntime", "ServingRuntime"]},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "additionalProperties": False,
            "properties": {
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "supportedModelFormats": {"type": "array", "items": _MODEL_FORMAT},
                "protocolVersions": {"type": "array", "items": _PROTOCOLS},
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "grpcEndpoint": {"type": "string"},
                "grpcDataEndpoint": {"type": "string"},
                "httpDataEndpoint": {"type": "string"},
                "replicas": {"type": "integer"},
                "containers": {"type": "array", "minItems": 1},
                "volumes": {"type": "array"},
                "nodeSelector": {"type": "object"},
                "affinity": {"type": "object"},
                "tolerations": {"type": "array"},
                "imagePullSecrets": {"type": "array"},
                "hostIPC": {"type": "boolean"},
            },
        },
    },
}
# From serving.kserve.io_inferenceservices (v1beta1): spec.predictor with a ModelSpec, which is
# a core Container (name optional) plus the fields below.
_MODEL_SPEC_OWN = {"modelFormat", "runtime", "storageUri", "protocolVersion", "storage"}
INFERENCE_SERVICE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1beta1"},
        "kind": {"const": "InferenceService"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["predictor"],
            "additionalProperties": False,
            "properties": {
                "predictor": {
                    "type": "object",
                    "required": ["model"],
                    "properties": {
                        "minReplicas": {"type": "integer", "minimum": 0},
                        "maxReplicas": {"type": "integer", "minimum": 0},
                        "model": {
                            "type": "object",
                            "required": ["modelFormat"],
                            "properties": {
                                "modelFormat": _MODEL_FORMAT,
                                "runtime": {"type": "string"},
                                "storageUri": {"type": "string"},
                                "protocolVersion": _PROTOCOLS,
                            },
                        },
                    },
                },
                "transformer": {"type": "object"},
                "explainer": {"type": "object"},
            },
        },
    },
}
# From monitoring.coreos.com_podmonitors (v1).
_DURATION = r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
PODMONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "properties": {
                "selector": {"type": "object"},
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {
                                "type": "string",
                                "pattern": _DURATION,
                            },
                        },
                    },
                },
            },
        },
    },
}

# KServe's stock runtime (config/runtimes/kserve-tritonserver.yaml) runs exactly this.
KSERVE_TRITONSERVER_ARGS = [
    "tritonserver",
    "--model-store=/mnt/models",
    "--grpc-port=9000",
    "--http-port=8080",
    "--allow-grpc=true",
    "--allow-http=true",
]


def test_cluster_serving_runtime_validates() -> None:
    runtime = _one(KSERVE / "cluster-serving-runtime.yaml", "ClusterServingRuntime")
    jsonschema.validate(runtime, SERVING_RUNTIME_SCHEMA)
    container_schema = _core_validator("container-v1")
    for container in runtime["spec"]["containers"]:
        container_schema.validate(container)
    # The strict schema refuses what a cluster would (a misspelt field here).
    with pytest.raises(jsonschema.ValidationError, match="imagee"):
        container_schema.validate({"name": "kserve-container", "imagee": "x"})
    volume_schema = _core_validator("volume-v1")
    for volume in runtime["spec"]["volumes"]:
        volume_schema.validate(volume)


def test_cluster_serving_runtime_serves_triton_formats_on_v2_with_metrics() -> None:
    spec = _one(KSERVE / "cluster-serving-runtime.yaml", "ClusterServingRuntime")["spec"]
    assert {f["name"] for f in spec["supportedModelFormats"]} == {
        "triton",
        "onnx",
        "pytorch",
        "openvino",
        "xgboost",
        "lightgbm",
        "python",
    }
    assert spec["protocolVersions"] == ["v2", "grpc-v2"]
    assert spec["annotations"]["prometheus.kserve.io/port"] == "8002"
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    options = _serve_options(container["args"])
    # KServe routes REST to 8080 and gRPC to 9000, and mounts the model at /mnt/models.
    assert (options.http_port, options.grpc_port, options.metrics_port) == (8080, 9000, 8002)
    assert [str(p) for p in options.model_repositories] == ["/mnt/models"]
    assert options.host == "0.0.0.0"
    assert container["ports"][0]["containerPort"] == 8080
    (shm,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == shm["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize("name", ["inference-service.yaml", "inference-service-tritonserver.yaml"])
def test_inference_services_validate(name: str) -> None:
    service = _one(KSERVE / name, "InferenceService")
    jsonschema.validate(service, INFERENCE_SERVICE_SCHEMA)
    model = dict(service["spec"]["predictor"]["model"])
    container = {k: v for k, v in model.items() if k not in _MODEL_SPEC_OWN}
    _core_validator("container-v1").validate({"name": "kserve-container", **container})


def test_inference_service_names_this_runtime_and_a_format_it_serves() -> None:
    runtime = _one(KSERVE / "cluster-serving-runtime.yaml", "ClusterServingRuntime")
    model = _one(KSERVE / "inference-service.yaml", "InferenceService")["spec"]["predictor"][
        "model"
    ]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = {(f["name"], f.get("version")) for f in runtime["spec"]["supportedModelFormats"]}
    assert (model["modelFormat"]["name"], model["modelFormat"].get("version")) in formats
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]


def test_stock_kserve_triton_runtime_flags_work_through_the_tritonserver_command() -> None:
    shim = _one(KSERVE / "inference-service-tritonserver.yaml", "InferenceService")
    assert shim["spec"]["predictor"]["model"]["runtime"] == "kserve-tritonserver"
    # tritonserver (and kernel serve) listen on every interface by default.
    argv = ["kernel", "serve", "--host", "0.0.0.0", *KSERVE_TRITONSERVER_ARGS[1:]]
    options = _serve_options(argv)
    assert (options.http_port, options.grpc_port) == (8080, 9000)
    assert [str(p) for p in options.model_repositories] == ["/mnt/models"]
    assert options.host == "0.0.0.0"
    assert shlex.join(KSERVE_TRITONSERVER_ARGS).startswith("tritonserver ")


def test_pod_runs_as_the_image_user() -> None:
    pod, container = _deployment()
    users = [
        line.split()[1]
        for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    ]
    uid, gid = users[-1].split(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
