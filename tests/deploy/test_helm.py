"""The Helm chart, rendered by the real Helm v4 engine (helm-python-sdk), offline.

Every scenario (the defaults and each ci/*-values.yaml) lints clean, renders objects that
validate against the Kubernetes 1.30 schemas in strict mode, and yields a gateway config
that `affinity-gateway check-config` accepts. The `helm test` pod's script runs here against
a real gateway and simulator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "affinity-gateway"
SCENARIOS = [
    "default",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
]
RELEASE, NAMESPACE = "agw", "llm"
KUBERNETES = "1.30"
# Prometheus Operator CRDs: no upstream schema to validate against.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
CHECK_CONFIG = Path(sys.executable).with_name("affinity-gateway")
VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def scenario_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


@dataclass
class Rendered:
    objects: list[dict[str, Any]]
    documents_per_template: dict[str, int]
    notes: str

    def get(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def config(self) -> dict[str, Any]:
        text = self.get("ConfigMap", self.gateway()["metadata"]["name"] + "-config")["data"]["config.yaml"]
        loaded: dict[str, Any] = yaml.safe_load(text)
        return loaded

    def gateway(self) -> dict[str, Any]:
        [deployment] = [
            o
            for o in self.objects
            if o["kind"] == "Deployment"
            and o["spec"]["template"]["spec"]["containers"][0]["name"] == "gateway"
        ]
        return deployment

    def container(self) -> dict[str, Any]:
        container: dict[str, Any] = self.gateway()["spec"]["template"]["spec"]["containers"][0]
        return container


def render(
    chart: helm.Chart, values: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE
) -> Rendered:
    manifests = chart.render(values=values, name=release, namespace=namespace, is_install=True)
    objects, counts, notes = [], {}, ""
    for template, text in manifests.items():
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        documents = [d for d in yaml.safe_load_all(text) if d]
        counts[template] = len(documents)
        objects += documents
    return Rendered(objects, counts, notes)


def schema_problems(objects: list[dict[str, Any]]) -> list[str]:
    """Strict Kubernetes-schema validation; only the CRD kinds may lack a schema."""
    problems = []
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if obj["kind"] not in CRD_KINDS:
                problems.append(f"{where}: no schema")
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
    return problems


def run_check_config(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`affinity-gateway check-config` with every $VAR the config names set to a dummy."""
    assert CHECK_CONFIG.exists(), f"{CHECK_CONFIG} is missing: install the package (pip install -e .)"
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    for var in VAR.findall(config_text):
        # Loopback on a closed port: check-config must never need to reach it.
        env[var] = "redis://127.0.0.1:1/0" if var == "REDIS_URL" else f"dummy-{var.lower()}"
    return subprocess.run(
        [str(CHECK_CONFIG), "check-config", str(path)], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, Rendered]:
    return {name: render(chart, scenario_values(name)) for name in SCENARIOS}


def test_there_are_scenarios() -> None:
    assert {"trial", "production", "memory-store", "external-redis-url"} <= set(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_is_clean(scenario: str) -> None:
    report = helm.lint(CHART, scenario_values(scenario), strict=True, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); 2 and 3 are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_objects_validate_against_kubernetes_schemas(scenario: str, rendered: dict[str, Rendered]) -> None:
    result = rendered[scenario]
    assert schema_problems(result.objects) == []
    assert {o["metadata"].get("namespace") for o in result.objects} == {NAMESPACE}
    # One resource per template.
    assert max(result.documents_per_template.values()) == 1


def test_schema_validation_is_strict() -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    assert schema_problems([service]) == [
        "Service/x: spec: Additional properties are not allowed ('prots' was unexpected)"
    ]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rendered_config_passes_check_config(
    scenario: str, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    config = rendered[scenario].config()
    result = run_check_config(yaml.safe_dump(config), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dummy-" not in result.stdout, "check-config must mask keys"


def test_check_config_rejects_a_broken_config(tmp_path: Path) -> None:
    result = run_check_config(
        "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n    acess_key: x\n", tmp_path
    )
    assert result.returncode == 1
    assert "acess_key" in result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_config_variable_reaches_the_pod(scenario: str, rendered: dict[str, Rendered]) -> None:
    result = rendered[scenario]
    values = scenario_values(scenario)
    container = result.container()
    provided = {e["name"] for e in container.get("env", [])}
    secrets = [o for o in result.objects if o["kind"] == "Secret"]
    provided |= {key for secret in secrets for key in secret["stringData"]}
    wanted = set(VAR.findall(yaml.safe_dump(result.config())))
    if values.get("providerKeys", {}).get("existingSecret"):
        # Whatever the existing Secret holds arrives through envFrom.
        assert container["envFrom"] == [{"secretRef": {"name": values["providerKeys"]["existingSecret"]}}]
        wanted &= {"REDIS_URL"}
    if wanted - provided:
        # Only the key-less default may start without its keys, and NOTES says so.
        assert scenario == "default" and wanted - provided == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
        assert "WARNING: neither providerKeys.existingSecret nor providerKeys.values" in result.notes
    else:
        assert "WARNING: neither" not in result.notes


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pods_are_hardened(scenario: str, rendered: dict[str, Rendered]) -> None:
    pods = [
        o["spec"]["template"]["spec"] for o in rendered[scenario].objects if "template" in o.get("spec", {})
    ]
    pods += [o["spec"] for o in rendered[scenario].objects if o["kind"] == "Pod"]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"]


def test_gateway_deployment_defaults(rendered: dict[str, Rendered]) -> None:
    result = rendered["default"]
    pod = result.gateway()["spec"]["template"]["spec"]
    container = result.container()
    assert container["args"] == [
        "serve",
        "--config",
        "/etc/affinity-gateway/config.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "12000",
        "--workers",
        "1",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 12000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > result.config()["server"]["drain_timeout_seconds"] + pause
    keys = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    # The HPA owns the replica count.
    assert "replicas" not in result.gateway()["spec"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_selectors_wire_up(scenario: str, rendered: dict[str, Rendered]) -> None:
    result = rendered[scenario]
    deployment = result.gateway()
    name = deployment["metadata"]["name"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    service = result.get("Service", name)
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    volume = deployment["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == f"{name}-config"
    for obj in result.objects:
        if obj["kind"] == "PodDisruptionBudget":
            assert obj["spec"]["selector"]["matchLabels"] == selector
        if obj["kind"] == "HorizontalPodAutoscaler":
            assert obj["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
        if obj["kind"] == "ServiceMonitor":
            assert obj["spec"]["selector"]["matchLabels"] == selector
            assert obj["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_scrape_annotations_follow_the_port_unless_a_service_monitor_scrapes(chart: helm.Chart) -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        found: dict[str, str] = render(chart, values).gateway()["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in found.items() if k.startswith("prometheus.io/")}

    assert annotations({"containerPort": 8080}) == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }
    assert annotations({"serviceMonitor": {"enabled": True}}) == {}


def test_protected_metrics_are_scraped_with_a_key(chart: helm.Chart, rendered: dict[str, Rendered]) -> None:
    [endpoint] = rendered["production"].get("ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer", "credentials": {"name": "llm-gateway-keys", "key": "METRICS_KEY"}}
    assert "with a gateway key" in rendered["production"].notes
    protected = {"config": {"auth": {"keys": [{"key": "$GATEWAY_KEY"}], "protect": ["metrics"]}},
                 "serviceMonitor": {"enabled": True}}
    with pytest.raises(helm.HelmRenderError, match=r"set serviceMonitor\.authorization"):
        render(chart, protected)
    unprotected = render(chart, {"serviceMonitor": {"enabled": True}}).get("ServiceMonitor")
    assert "authorization" not in unprotected["spec"]["endpoints"][0]


def test_config_change_rolls_the_pods(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        annotations = render(chart, values).gateway()["spec"]["template"]["metadata"]["annotations"]
        return str(annotations["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"routing": {"session_ttl_seconds": 60}}})


def test_redis_wiring(rendered: dict[str, Rendered]) -> None:
    def redis_env(scenario: str) -> list[dict[str, Any]]:
        return [e for e in rendered[scenario].container().get("env", []) if e["name"] == "REDIS_URL"]

    bundled = rendered["default"]
    service = bundled.get("Service", "agw-affinity-gateway-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    assert bundled.get("StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
    assert redis_env("default") == [
        {"name": "REDIS_URL", "value": "redis://agw-affinity-gateway-redis:6379/0"}
    ]
    assert bundled.config()["routing"]["session_cache"] == {"type": "redis", "url": "$REDIS_URL"}

    assert redis_env("production") == [
        {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "llm-gateway-redis", "key": "url"}}}
    ]
    cache = rendered["production"].config()["routing"]["session_cache"]
    assert cache["url"] == "$REDIS_URL" and cache["tenant_header"] == "x-tenant-id"
    assert redis_env("external-redis-url")[0]["value"].startswith("redis+sentinel://")

    memory = rendered["memory-store"]
    assert redis_env("memory-store") == []
    assert "session_cache" not in memory.config()["routing"]
    assert "StatefulSet" not in memory.kinds()



def test_the_bundled_redis_keeps_its_data_by_default(rendered: dict[str, Rendered]) -> None:
    """AOF on a PersistentVolumeClaim and noeviction: a Redis restart loses no pin, and Redis
    never evicts a pin (or the store's epoch key) behind the gateway's own cap."""
    def flags(command: list[str]) -> dict[str, str]:
        return dict(zip(command[1::2], command[2::2], strict=True))

    persistent = rendered["default"].get("StatefulSet")
    spec = persistent["spec"]
    assert spec["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    container = spec["template"]["spec"]["containers"][0]
    command = flags(container["command"])
    assert (command["--appendonly"], command["--appendfsync"]) == ("yes", "everysec")
    assert (command["--maxmemory-policy"], command["--dir"]) == ("noeviction", "/data")
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert "volumes" not in spec["template"]["spec"]  # the claim, not an emptyDir

    trial = rendered["trial"].get("StatefulSet")  # persistence off: an emptyDir, no AOF
    assert "volumeClaimTemplates" not in trial["spec"]
    assert flags(trial["spec"]["template"]["spec"]["containers"][0]["command"])["--appendonly"] == "no"
    assert trial["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]


@pytest.mark.parametrize("scenario", ["trial", "memory-store"])
def test_simulator_serves_every_provider(scenario: str, rendered: dict[str, Rendered]) -> None:
    result = rendered[scenario]
    [service] = [
        o for o in result.objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-simulator")
    ]
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    providers = result.config()["model_providers"]
    assert {p["base_url"] for p in providers} == {url}
    assert not any("access_key" in p for p in providers)
    simulator = result.get("Deployment", service["metadata"]["name"])
    args = simulator["spec"]["template"]["spec"]["containers"][0]["args"]
    # The simulator's own default host is loopback: unreachable from the gateway pods.
    assert args[:5] == ["simulate", "--host", "0.0.0.0", "--port", "8000"]


def test_network_policies(rendered: dict[str, Rendered]) -> None:
    result = rendered["trial"]
    policies = {o["metadata"]["name"]: o for o in result.objects if o["kind"] == "NetworkPolicy"}
    assert set(policies) == {"agw", "agw-redis", "agw-simulator"}
    gateway_labels = result.gateway()["spec"]["selector"]["matchLabels"]
    for name in ("agw-redis", "agw-simulator"):
        [rule] = policies[name]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": gateway_labels}}]
    test_pod_labels = result.get("Pod")["metadata"]["labels"]
    test_peer = {"podSelector": {"matchLabels": {**gateway_labels, "app.kubernetes.io/component": "test"}}}
    assert test_peer["podSelector"]["matchLabels"].items() <= test_pod_labels.items()
    peers = policies["agw"]["spec"]["ingress"][0]["from"]
    policy = scenario_values("trial")["networkPolicy"]
    assert peers == [*policy["ingressFrom"], *policy["metricsFrom"], test_peer]  # Prometheus too


def test_monitoring_objects_carry_the_observability_files(
    chart: helm.Chart, rendered: dict[str, Rendered]
) -> None:
    dashboard = ROOT / "deploy" / "grafana" / "affinity-gateway.json"
    alerts = ROOT / "deploy" / "prometheus" / "alerts.yaml"
    # files/ links to the canonical copies; this catches a broken link or a diverged copy.
    files = {f["name"]: f["data"] for f in chart.files}
    assert files["files/affinity-gateway.json"] == dashboard.read_text()
    assert files["files/alerts.yaml"] == alerts.read_text()
    result = rendered["production"]
    rule = result.get("PrometheusRule")
    assert rule["spec"] == yaml.safe_load(alerts.read_text())
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    config_map = result.get("ConfigMap", "llm-gateway-dashboard")
    assert json.loads(config_map["data"]["affinity-gateway.json"]) == json.loads(dashboard.read_text())
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert not CRD_KINDS & set(rendered["default"].kinds())


def test_render_refuses_a_grace_period_shorter_than_the_drain(chart: helm.Chart) -> None:
    with pytest.raises(
        helm.HelmRenderError, match=r"terminationGracePeriodSeconds \(30\) must exceed .* \(30\)"
    ):
        render(chart, {"terminationGracePeriodSeconds": 30})


def test_render_refuses_workers_without_a_shared_store(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmRenderError, match="workers > 1 needs a shared pin store"):
        render(chart, {"workers": 2, "redis": {"enabled": False}})
    sentinel = {"session_cache": {"sentinel": {"master_name": "m", "sentinels": ["s:26379"]}}}
    assert render(chart, {"workers": 2, "redis": {"enabled": False}, "config": {"routing": sentinel}}).objects


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": "two"}, "/replicaCount"),
        ({"redis": {"enabeld": True}}, "'enabeld' not allowed"),
        ({"workers": 0}, "/workers"),
        ({"service": {"type": "Ingress"}}, "/service/type"),
        ({"externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
        ({"config": {"version": "v9"}}, "/config/version"),
        ({"config": {"model_providers": []}}, "/config/model_providers"),
        ({"simulator": {"failRate": 2}}, "/simulator/failRate"),
        ({"tracing": {"protocol": "http/json"}}, "/tracing/protocol"),
        ({"tracing": {"otlpEndpoint": "collector:4318"}}, "/tracing/otlpEndpoint"),
    ],
)
def test_schema_rejects_wrong_values(chart: helm.Chart, values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


def test_tracing_values_render_into_the_config(chart: helm.Chart, rendered: dict[str, Rendered]) -> None:
    assert rendered["production"].config()["tracing"] == {
        "enabled": True, "otlp_endpoint": "http://otel-collector.observability:4317", "protocol": "grpc",
        "sample_ratio": 0.05, "capture_content": False, "service_name": "llm-gateway",
    }
    assert "tracing" not in rendered["memory-store"].config()
    # Over a Plano block in `config`: its own sampling and endpoint give way to the values'.
    plano = {"config": {"tracing": {"random_sampling": 100, "opentracing_grpc_endpoint": "http://j:4317",
                                    "batch_delay_ms": 100}},
             "tracing": {"enabled": True, "otlpEndpoint": "http://c:4318"}}
    assert render(chart, plano).config()["tracing"] == {
        "enabled": True, "otlp_endpoint": "http://c:4318", "protocol": "http/protobuf", "sample_ratio": 1.0,
        "capture_content": False, "batch_delay_ms": 100,
    }


def schema_leaves(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    properties = schema.get("properties")
    if not properties:
        yield path
        return
    for key, child in properties.items():
        yield from schema_leaves(child, (*path, key))


def lookup(values: dict[str, Any], path: tuple[str, ...]) -> tuple[bool, Any]:
    node: Any = values
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def test_every_schema_option_is_switched_by_some_scenario(chart: helm.Chart) -> None:
    """Each option is set, to something other than its default, by at least one ci/ file."""
    schema = chart.schema
    assert schema is not None
    # `global` is Helm's, for parent charts.
    leaves = [leaf for leaf in schema_leaves(schema) if leaf[0] != "global"]
    assert len(leaves) > 80
    defaults = chart.values
    scenarios = [scenario_values(name) for name in SCENARIOS if name != "default"]

    def switched(leaf: tuple[str, ...]) -> bool:
        default = lookup(defaults, leaf)[1]
        return any(found and value != default for found, value in (lookup(s, leaf) for s in scenarios))

    assert [".".join(leaf) for leaf in leaves if not switched(leaf)] == []


def test_notes_walk_from_port_forward_to_a_pinned_session(rendered: dict[str, Rendered]) -> None:
    notes = rendered["default"].notes
    assert "kubectl --namespace llm port-forward service/agw-affinity-gateway 12000:12000" in notes
    assert "helm test agw --namespace llm" in notes
    start = notes.index("from openai import OpenAI")
    end = notes.index("# Ask again")
    snippet = textwrap.dedent(" " * 3 + notes[start:end])
    compile(snippet, "NOTES.txt", "exec")
    assert 'extra_headers={"X-Model-Affinity": "session-42"}' in snippet
    assert 'model="openai/gpt-4o-mini"' in snippet
    production = rendered["production"].notes
    assert "port-forward service/llm-gateway 12000:80" in production
    assert 'api_key="<your gateway key>"' in production
    assert "canned" in rendered["trial"].notes
    assert "WARNING: no Redis" not in rendered["memory-store"].notes  # one replica: nothing to share


def test_notes_warn_when_replicas_keep_their_own_pins(chart: helm.Chart) -> None:
    assert "WARNING: no Redis" in render(chart, {"redis": {"enabled": False}}).notes


# --- the `helm test` pod ---------------------------------------------------------------------


def helm_test_pod(result: Rendered) -> tuple[str, dict[str, str]]:
    pod = result.get("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python", "-c"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    return container["args"][0], env


def run_script(script: str, env: dict[str, str], url: str) -> subprocess.CompletedProcess[str]:
    env = {**env, "GATEWAY_URL": url, "PATH": os.environ.get("PATH", "")}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_helm_test_pod_targets_the_service(rendered: dict[str, Rendered]) -> None:
    _script, env = helm_test_pod(rendered["default"])
    assert env == {"GATEWAY_URL": "http://agw-affinity-gateway:12000", "MODEL": "openai/gpt-4o-mini"}
    _script, env = helm_test_pod(rendered["production"])
    assert env["GATEWAY_URL"] == "http://llm-gateway:80"
    [key] = [
        e
        for e in rendered["production"].get("Pod")["spec"]["containers"][0]["env"]
        if e["name"] == "GATEWAY_KEY"
    ]
    assert key["valueFrom"] == {"secretKeyRef": {"name": "llm-gateway-keys", "key": "GATEWAY_KEY"}}
    assert "Pod" not in rendered["memory-store"].kinds()


def test_helm_test_pod_passes_against_a_real_gateway(rendered: dict[str, Rendered], redis_url: str) -> None:
    from gateway.config import parse_config
    from gateway.simulator import SimulatorSettings, create_simulator_app
    from tests.support import gateway, serve

    result = rendered["trial"]
    script, env = helm_test_pod(result)
    assert env["MODEL"] == "anthropic/claude-sonnet-4-20250514"
    with serve(create_simulator_app(SimulatorSettings())) as simulator:
        config = result.config()
        for provider in config["model_providers"]:
            provider["base_url"] = simulator.url
        with gateway(parse_config(config, environ={"REDIS_URL": redis_url})) as server:
            outcome = run_script(script, env, server.url)
    assert outcome.returncode == 0, outcome.stdout + outcome.stderr
    assert "model=anthropic/claude-sonnet-4-20250514 affinity=new" in outcome.stdout
    assert "affinity=hit" in outcome.stdout


@contextmanager
def fake_gateway(status: int, models: list[str]) -> Iterator[str]:
    """A gateway that forgets pins: `new` every time, and the next model of `models`."""
    answers = iter(models)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("x-gateway-model", next(answers))
            self.send_header("x-model-affinity-status", "new")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "no"}}' if status >= 400 else b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize(
    ("status", "complaint"), [(200, "expected affinity new then hit, got new then new"), (401, "HTTP 401")]
)
def test_helm_test_pod_fails_when_the_pin_does_not_hold(
    rendered: dict[str, Rendered], status: int, complaint: str
) -> None:
    script, env = helm_test_pod(rendered["default"])
    with fake_gateway(status, ["openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"]) as url:
        outcome = run_script(script, env, url)
    assert outcome.returncode == 1
    assert complaint in outcome.stderr
