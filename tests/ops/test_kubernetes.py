"""deploy/kubernetes: the base and the overlays render, validate against the
Kubernetes schemas (kubernetes-validate), and say what the service needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.ops.kustomize_lite import render

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
TARGETS = {
    "base": KUBERNETES / "base",
    "example": KUBERNETES / "overlays" / "example",
    "split-roles": KUBERNETES / "overlays" / "split-roles",
}
# Custom resources the Kubernetes schemas do not know; checked field by field below.
CUSTOM_KINDS = {"ScaledObject"}


def _key(obj: dict) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _objects(target: str) -> dict[tuple[str, str], dict]:
    return {_key(obj): obj for obj in render(TARGETS[target])}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_renders_like_kubectl_kustomize(target):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the manifests are rendered by tests/ops/kustomize_lite.py only")
    result = subprocess.run([kubectl, "kustomize", str(TARGETS[target])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    theirs = {_key(obj): obj for obj in yaml.safe_load_all(result.stdout) if obj}
    assert theirs == _objects(target)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_object_is_valid_for_current_kubernetes(target):
    version = kubernetes_validate.latest_version()
    objects = _objects(target)
    assert {kind for kind, _ in objects} == {
        "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job", "ScaledObject"}
    for (kind, name), obj in objects.items():
        if kind in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} is not valid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def test_an_invalid_manifest_is_refused():
    """The validation above can fail: a misspelt field is caught."""
    deployment = _objects("base")[("Deployment", "crm-records")]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_deployment_runs_the_service_safely(target):
    objects = _objects(target)
    deployment = objects[("Deployment", "crm-records")]
    config = objects[("ConfigMap", "crm-records-config")]["data"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"configMapRef": {"name": "crm-records-config"}} in container["envFrom"]
    assert {"secretRef": {"name": "crm-records-secrets"}} in container["envFrom"]
    assert config["LOG_FORMAT"] == "json"
    # The kubelet's SIGKILL comes after the service's own shutdown deadline, with margin.
    deadline = float(config["SHUTDOWN_TIMEOUT_SECONDS"])
    assert pod["terminationGracePeriodSeconds"] >= deadline + 5
    default = Settings.model_fields.get("shutdown_timeout_seconds")
    if default is not None:
        assert deadline == default.default


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_selectors_find_the_pods(target):
    objects = _objects(target)
    pod_labels = objects[("Deployment", "crm-records")]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        objects[("Deployment", "crm-records")]["spec"]["selector"]["matchLabels"],
        objects[("PodDisruptionBudget", "crm-records")]["spec"]["selector"]["matchLabels"],
        objects[("Service", "crm-records")]["spec"]["selector"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    job_labels = objects[("Job", "crm-records-migrate")]["spec"]["template"]["metadata"]["labels"]
    assert not selectors[1].items() <= job_labels.items(), "the PDB must not count the migration Job's pod"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_migrations_run_as_a_job_and_scaling_follows_the_lag(target):
    objects = _objects(target)
    job = objects[("Job", "crm-records-migrate")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "app", "migrate"]
    assert container["image"] == objects[("Deployment", "crm-records")]["spec"]["template"]["spec"]["containers"][0][
        "image"]
    scaled = objects[("ScaledObject", "crm-records")]
    config = objects[("ConfigMap", "crm-records-config")]["data"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "crm-records"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == config["KAFKA_GROUP_ID"]
    assert trigger["metadata"]["topic"] == config["KAFKA_TOPIC"]
    assert trigger["metadata"]["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    # More replicas than partitions consume nothing more.
    partitions = int(config.get("KAFKA_TOPIC_PARTITIONS", Settings.model_fields["kafka_topic_partitions"].default))
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions


def _role(deployment: dict) -> str:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("env", [])}.get("SERVICE_ROLE", "all")


def test_the_split_overlay_runs_a_consumer_and_a_worker_deployment():
    objects = _objects("split-roles")
    consumer, worker = objects[("Deployment", "crm-records")], objects[("Deployment", "crm-records-worker")]
    assert (_role(consumer), _role(worker)) == ("consumer", "worker")
    assert Settings(_env_file=None, service_role=_role(worker)).runs_consumer is False
    worker_pods = worker["spec"]["template"]["metadata"]["labels"]
    consumer_pods = consumer["spec"]["template"]["metadata"]["labels"]
    # The Service (console, API) and the lag-driven scaling are the consumers'; the
    # selectors of one Deployment, its PDB and the Service never take the other's pods.
    assert objects[("ScaledObject", "crm-records")]["spec"]["scaleTargetRef"]["name"] == "crm-records"
    service = objects[("Service", "crm-records")]["spec"]["selector"]
    assert service.items() <= consumer_pods.items() and not service.items() <= worker_pods.items()
    for name, pods, others in (("crm-records", consumer_pods, worker_pods),
                               ("crm-records-worker", worker_pods, consumer_pods)):
        for selector in (objects[("Deployment", name)]["spec"]["selector"]["matchLabels"],
                         objects[("PodDisruptionBudget", name)]["spec"]["selector"]["matchLabels"]):
            assert selector.items() <= pods.items() and not selector.items() <= others.items()
    # Both run the same image, with the same probes and safety settings.
    (consumer_container,) = consumer["spec"]["template"]["spec"]["containers"]
    (worker_container,) = worker["spec"]["template"]["spec"]["containers"]
    for field in ("image", "livenessProbe", "readinessProbe", "startupProbe", "securityContext", "envFrom"):
        assert worker_container[field] == consumer_container[field], field
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == \
        consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert worker["metadata"]["namespace"] == consumer["metadata"]["namespace"]
