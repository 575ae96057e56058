"""The container image and Kubernetes manifests, checked without a cluster or a container engine.

Each Kustomize overlay is rendered with ``kubectl kustomize`` and every object is validated against the
Kubernetes JSON schemas (offline, with the ``kubernetes-validate`` package); then the manifests are checked
against meshlog itself: the probes' paths are routes of the app, the flags given to ``meshlog serve`` (and the
other commands) exist, the names that tie objects together match. The Dockerfile's invariants are checked
statically. Without kubectl the rendering tests skip, except under ``CI=true`` (``.ci/run`` installs Debian's
``kubernetes-client`` when kubectl is missing).
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from meshlog.cli import main

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.30.0"
SERVER_PORT = 8080


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is required under CI=true (.ci/run installs Debian's kubernetes-client)")
        pytest.skip("kubectl not found: apt-get install kubernetes-client to render the Kustomize overlays")
    return found


def render(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for o in objects:
        if o["kind"] in {"Deployment", "Job"}:
            for c in o["spec"]["template"]["spec"]["containers"]:
                yield o, c


def options_of(*words: str) -> set[str]:
    command: click.Command = main
    for word in words:
        assert isinstance(command, click.Group)
        command = command.commands[word]
    return {opt for param in command.params for opt in param.opts if opt.startswith("--")}


def flags(args: list[str]) -> list[str]:
    return [a for a in args if a.startswith("--")]


# -- Kustomize --------------------------------------------------------------------------------------------------
def test_base_renders() -> None:
    kinds = sorted(o["kind"] for o in render(K8S / "base"))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Job",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )


def test_every_object_is_valid_kubernetes(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    validator = importlib.import_module("kubernetes_validate")
    _, objects = overlay
    assert objects
    for o in objects:
        try:
            validator.validate(o, KUBERNETES_VERSION, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{o['kind']}/{o['metadata']['name']}: {exc.message} at {list(exc.path)}")


def test_a_validation_error_is_caught() -> None:
    """The validator itself can fail: an unknown field and a wrong type are refused."""
    validator = importlib.import_module("kubernetes_validate")
    bad = render(K8S / "base")
    deployment = next(o for o in bad if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(validator.ValidationError):
        validator.validate(deployment, KUBERNETES_VERSION, strict=True)
    deployment["spec"]["replicas"] = 2
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(validator.ValidationError):
        validator.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_overlays_set_their_namespace_and_image(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    namespace = {"dev": "meshlog-dev", "prod": "meshlog"}[name]
    assert {o["metadata"].get("namespace") for o in objects} == {namespace}
    images = {c["image"] for _, c in containers(objects)}
    assert images == {f"ghcr.io/meshlog/meshlog:{'dev' if name == 'dev' else '0.1.0'}"}


def test_the_server_deployment(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    server = by_kind(objects, "Deployment")["meshlog"]
    pod = server["spec"]["template"]
    annotations = pod["metadata"]["annotations"]
    assert annotations["dapr.io/enabled"] == "true"
    assert annotations["dapr.io/app-id"] == "meshlog"
    assert annotations["dapr.io/app-port"] == str(SERVER_PORT)
    assert annotations["dapr.io/app-protocol"] == "http"
    assert annotations["dapr.io/app-token-secret"] == "meshlog-dapr-app-token"

    (container,) = pod["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]

    # Every flag exists in `meshlog serve`; the port is the one the probes and Dapr use.
    args = container["args"]
    assert set(flags(args)) <= options_of("serve"), flags(args)
    assert args[args.index("--port") + 1] == str(SERVER_PORT)
    assert "--no-migrate" in args and "--dapr" in args
    assert ("--insecure" in args) == (name == "dev")

    (url,) = [e for e in container["env"] if e["name"] == "MESHLOG_URL"]
    assert url["valueFrom"]["secretKeyRef"] == {"name": "meshlog-database", "key": "url"}
    assert {"configMapRef": {"name": "meshlog-config"}} in container["envFrom"]
    assert "meshlog-config" in by_kind(objects, "ConfigMap")


def test_the_pods_run_as_non_root(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    for o, c in containers(objects):
        pod = o["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_service_hpa_and_pdb_point_at_the_server(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    server = by_kind(objects, "Deployment")["meshlog"]
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["selector"]["matchLabels"].items() <= labels.items()

    service = by_kind(objects, "Service")["meshlog"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"

    hpa = by_kind(objects, "HorizontalPodAutoscaler")["meshlog"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "meshlog"}
    assert 1 <= hpa["spec"]["minReplicas"] <= server["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]

    pdb = by_kind(objects, "PodDisruptionBudget")["meshlog"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # The ingest workers and the Job are not selected by the server's Service or budget.
    for other in ("meshlog-ingest-nats",):
        other_labels = by_kind(objects, "Deployment")[other]["spec"]["template"]["metadata"]["labels"]
        assert not service["spec"]["selector"].items() <= other_labels.items()


def test_the_migration_job(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    job = by_kind(objects, "Job")["meshlog-migrate"]
    pod = job["spec"]["template"]
    assert pod["metadata"]["annotations"]["dapr.io/enabled"] == "false"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["meshlog", "migrate"]
    assert "migrate" in main.commands
    assert [e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]] == ["meshlog-database"]


def test_the_nats_ingest_workers(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = overlay
    worker = by_kind(objects, "Deployment")["meshlog-ingest-nats"]
    assert "dapr.io/enabled" not in worker["spec"]["template"]["metadata"].get("annotations", {})
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:3] == ["meshlog", "ingest", "nats"]
    assert set(flags(command)) == {"--url", "--stream", "--subjects", "--durable", "--store"}
    # Each $(VAR) is defined in the container's environment (from the ConfigMap or the secret).
    config = by_kind(objects, "ConfigMap")["meshlog-config"]["data"]
    defined = set(config) | {e["name"] for e in container["env"]}
    for variable in re.findall(r"\$\((\w+)\)", " ".join(command)):
        assert variable in defined, variable
    group = getattr(main, "commands", {}).get("ingest")
    if group is not None and "nats" in getattr(group, "commands", {}):
        assert set(flags(command)) <= options_of("ingest", "nats")


def test_dev_generates_its_secrets_and_prod_only_references_them() -> None:
    dev = by_kind(render(K8S / "overlays" / "dev"), "Secret")
    assert set(dev) == {"meshlog-database", "meshlog-dapr-app-token"}
    assert set(dev["meshlog-dapr-app-token"]["data"]) == {"token"}
    assert by_kind(render(K8S / "overlays" / "prod"), "Secret") == {}


# -- Dapr components ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("file", "kind"), [("pubsub-jetstream.yaml", "jetstream"), ("pubsub-redis.yaml", "redis")])
def test_dapr_components(file: str, kind: str) -> None:
    (component,) = list(yaml.safe_load_all((ROOT / "deploy" / "dapr" / file).read_text()))
    assert component["apiVersion"] == "dapr.io/v1alpha1"
    assert component["kind"] == "Component"
    serve = main.commands["serve"]
    default_pubsub = next(p.default for p in serve.params if p.name == "dapr_pubsub")
    assert component["metadata"]["name"] == default_pubsub
    spec = component["spec"]
    assert spec["type"] == f"pubsub.{kind}" and spec["version"] == "v1"
    names = [m["name"] for m in spec["metadata"]]
    assert len(names) == len(set(names))
    for item in spec["metadata"]:
        assert set(item) in ({"name", "value"}, {"name", "secretKeyRef"})
        if "value" in item:
            assert isinstance(item["value"], str), item
    required = {"jetstream": {"natsURL", "durableName", "queueGroupName"}, "redis": {"redisHost", "consumerID"}}
    assert required[kind] <= set(names)


# -- the container image -----------------------------------------------------------------------------------------
def dockerfile() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_on_a_pinned_slim_python() -> None:
    lines = dockerfile()
    (arg,) = [line for line in lines if line.startswith("ARG PYTHON_IMAGE=")]
    image = arg.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    stages = [line for line in lines if line.startswith("FROM ")]
    assert stages == ["FROM ${PYTHON_IMAGE} AS build", "FROM ${PYTHON_IMAGE} AS runtime"]
    assert any(line.startswith("COPY --from=build ") for line in lines)


def test_dockerfile_installs_the_server_extras() -> None:
    (install,) = [line for line in dockerfile() if line.startswith("RUN python -m pip wheel")]
    extras = set(re.search(r"\[([a-z,]+)\]", install).group(1).split(","))  # type: ignore[union-attr]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"server", "postgres"} <= extras <= set(declared)
    if "nats" in declared:
        assert "nats" in extras


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    lines = dockerfile()
    runtime = lines[lines.index("FROM ${PYTHON_IMAGE} AS runtime") :]
    users = [line for line in runtime if line.startswith("USER ")]
    assert users and users[-1] == "USER 10001:10001"
    (check,) = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert f"http://127.0.0.1:{SERVER_PORT}/healthz" in check
    assert 'ENTRYPOINT ["meshlog", "serve", "--host", "0.0.0.0"]' in runtime
    assert f'CMD ["--port", "{SERVER_PORT}"]' in runtime
    assert f"EXPOSE {SERVER_PORT}" in runtime


def test_dockerignore_keeps_the_context_small() -> None:
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(rules)
    # What the build stage copies is exactly what the context lets in.
    copied = [line for line in dockerfile() if line.startswith("COPY ") and "--from" not in line]
    assert copied == ["COPY pyproject.toml README.md ./", "COPY src ./src"]


def test_the_probe_paths_are_routes_of_the_app() -> None:
    from starlette.testclient import TestClient

    from meshlog.server import create_app

    # As the Deployment runs it (with --dapr), the probes' paths answer 200; so does the sidecar's.
    with TestClient(create_app("memory://", dapr=True)) as client:
        for path in ("/healthz", "/readyz", "/dapr/subscribe"):
            assert client.get(path).status_code == 200, path
        assert client.get("/no-such-path").status_code == 404
