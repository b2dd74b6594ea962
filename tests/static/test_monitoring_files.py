"""The alert rules, Prometheus configurations and the Grafana dashboard: checked and
unit-tested with promtool (Debian's prometheus package), consistent with each other,
the Compose file, the Kubernetes manifests and the runbook (docs/observability.md)."""

import json
import shutil
import subprocess

import pytest
import yaml

from devstack.backends import required_or_skip
from devstack.servers import ROOT
from tests.support.kube import KUBECTL

PROMETHEUS = ROOT / "config" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
DASHBOARD = ROOT / "config" / "grafana" / "image-classifier.json"
CONFIGS = (PROMETHEUS / "prometheus.yml", ROOT / "k8s" / "monitoring" / "prometheus.yml")


@pytest.fixture(scope="module")
def promtool() -> str:
    required_or_skip(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    return shutil.which("promtool")


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def alert_names() -> list[str]:
    return [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]]


def test_rules_pass_promtool_check_and_their_unit_tests(promtool):
    checked = run(promtool, "check", "rules", RULES)
    assert checked.returncode == 0 and f"{len(alert_names())} rules found" in checked.stdout, (
        checked.stdout + checked.stderr)
    tested = run(promtool, "test", "rules", PROMETHEUS / "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_unit_tested_firing(promtool):
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    assert fired == set(alert_names())


def test_unit_tests_can_fail(promtool, tmp_path):
    """A rule that no longer fires makes promtool's unit test fail."""
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "vector(1) < 0"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path)
    assert run(promtool, "test", "rules", tmp_path / "alerts.test.yml").returncode != 0


@pytest.mark.parametrize("config", CONFIGS, ids=["compose", "k8s"])
def test_prometheus_configs_pass_promtool(promtool, config, tmp_path):
    """Checked with the rule file where the container mounts it replaced by the repo's."""
    text = config.read_text()
    assert "/etc/prometheus/alerts.yml" in text
    local = tmp_path / "prometheus.yml"
    local.write_text(text.replace("/etc/prometheus/alerts.yml", str(RULES)))
    checked = run(promtool, "check", "config", local)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = [job["job_name"] for job in yaml.safe_load(text)["scrape_configs"]]
    assert jobs == ["gateway", "torchserve"]  # the names the rules and dashboard use


def test_kubernetes_carries_the_same_rules_and_a_hardened_prometheus(tmp_path):
    assert (ROOT / "k8s" / "monitoring" / "alerts.yml").read_text() == RULES.read_text()
    rendered = run(KUBECTL, "kustomize", ROOT / "k8s" / "monitoring")
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    path = tmp_path / "monitoring.yaml"
    path.write_text(rendered.stdout)
    validated = run(KUBECTL.parent / "kubernetes-validate", "--strict", "-k", "1.37.0",
                    "--quiet", path)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert set(config_map["data"]) == {"prometheus.yml", "alerts.yml"}
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "prometheus"  # networkpolicy
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and not spec["automountServiceAccountToken"]
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    assert container["image"] == compose["prometheus"]["image"]
    headless = {d["metadata"]["name"]: d["spec"] for d in docs
                if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"}
    assert {name: spec["ports"][0]["port"] for name, spec in headless.items()} == {
        "gateway-metrics": 8000, "serve-metrics": 8082}


def test_compose_profiles_mount_what_exists():
    services = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["grafana"]
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["read_only"] and service["user"] not in ("0", "root")
        for volume in service["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
        ports = service["ports"][0]
        assert ports.startswith("${") and "127.0.0.1:" in ports  # loopback unless told


def test_dashboard_panels_each_have_queries_on_the_datasource_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "image-classifier"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["datasource"]["uid"] == "${datasource}"


def test_docs_have_a_runbook_line_for_every_alert():
    page = (ROOT / "docs" / "observability.md").read_text()
    runbook = page[page.index("### Alerts"):]
    for name in alert_names():
        assert f"| `{name}` |" in runbook, name
