"""A small kustomize renderer for the fields deploy/kubernetes uses, so the manifests
can be rendered and validated where no kustomize binary is installed. Any field it does
not implement is an error, never silently ignored; where `kubectl kustomize` exists the
tests check that both render the same objects."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "replicas", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomize_lite does not implement {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"only file patches are implemented: {patch}")
        _apply_patch(objects, yaml.safe_load((directory / patch["path"]).read_text()))
    for label_set in kustomization.get("labels", []):
        _add_labels(objects, label_set["pairs"], label_set.get("includeSelectors", False))
    for image in kustomization.get("images", []):
        _set_image(objects, image)
    for replica in kustomization.get("replicas", []):
        for obj in objects:
            if obj["kind"] in ("Deployment", "StatefulSet") and obj["metadata"]["name"] == replica["name"]:
                obj["spec"]["replicas"] = replica["count"]
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge for what these manifests need: maps merge, lists of named maps
    merge by name, anything else is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {item["name"]: item for item in base}
        result = [(_merge(by_name[item["name"]], item) if item["name"] in by_name else item) for item in patch]
        patched = {item["name"] for item in patch}
        return [item for item in base if item["name"] not in patched] + result
    return copy.deepcopy(patch)


def _apply_patch(objects: list[dict[str, Any]], patch: dict[str, Any]) -> None:
    for n, obj in enumerate(objects):
        if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]:
            objects[n] = _merge(obj, patch)
            return
    raise ValueError(f"patch target not found: {patch['kind']}/{patch['metadata']['name']}")


def _add_labels(objects: list[dict[str, Any]], pairs: dict[str, str], include_selectors: bool) -> None:
    for obj in objects:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        if not include_selectors:
            continue
        spec = obj.get("spec", {})
        if obj["kind"] == "Service":
            spec.setdefault("selector", {}).update(pairs)
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "PodDisruptionBudget"):
            spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            for constraint in spec["template"]["spec"].get("topologySpreadConstraints", []):
                constraint.setdefault("labelSelector", {}).setdefault("matchLabels", {}).update(pairs)


def _set_image(objects: list[dict[str, Any]], image: dict[str, str]) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
