"""Dockerfiles, Compose and Kubernetes files: linted, rendered, validated, consistent.

No Docker engine or cluster runs here, so these files are checked statically.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.settings import Settings
from devstack.servers import ROOT
from tests.support.kube import render

BIN = Path(sys.executable).parent
K8S_VERSION = "1.37.0"
SETTINGS_VARS = {name.upper() for name in Settings.__dataclass_fields__}
GATEWAY_VARS = SETTINGS_VARS | {"POSTGRES_PASSWORD"}  # used to build DATABASE_URL
TS_SCRIPT = (ROOT / "scripts/start-torchserve.sh").read_text()
TS_VARS = set(re.findall(r"^#   ([A-Z_]+) ", TS_SCRIPT, re.M))
SECRET_NAME = re.compile(r"SECRET|PASSWORD|TOKEN|KEY", re.I)


def holds_secret(name: str) -> bool:
    """A variable whose value would be a secret; *_FILE ones name a mounted file."""
    return bool(SECRET_NAME.search(name)) and not name.endswith("_FILE")


def run(*args, cwd=ROOT):
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """kubectl kustomize of k8s/ with throwaway secret files (as `make k8s-secrets` makes)."""
    work = tmp_path_factory.mktemp("k8s")
    text = render(work)
    path = work / "rendered.yaml"
    path.write_text(text)
    return path, [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]
        elif d["kind"] == "CronJob":
            yield d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def dockerfile(name):
    return (ROOT / name).read_text()


# ---- linters -------------------------------------------------------------------

def test_hadolint_is_clean():
    result = run(BIN / "hadolint", "Dockerfile.serve", "Dockerfile.gateway")
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_yamllint_is_clean():
    result = run(BIN / "yamllint", "-c", ".yamllint.yaml", "--strict", ".")
    assert result.returncode == 0, result.stdout


def test_rendered_manifests_pass_strict_schema_validation(rendered):
    path, docs = rendered
    result = run(BIN / "kubernetes-validate", "--strict", "-k", K8S_VERSION, "--quiet", path)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "StatefulSet", "Service",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "CronJob"} <= kinds


def test_schema_validation_can_fail(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n")
    assert run(BIN / "kubernetes-validate", "--strict", "-k", K8S_VERSION, bad).returncode != 0


def test_gateway_never_needs_torch():
    requirements = (ROOT / "requirements/gateway.txt").read_text().lower()
    assert not re.search(r"^(torch|torchvision|torchserve)\b", requirements, re.M)
    for path in (ROOT / "gateway").glob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+(torch|torchvision|ts)\b", path.read_text(), re.M), path
    assert "requirements/gateway.txt" in dockerfile("Dockerfile.gateway")
    assert "serve.txt" not in dockerfile("Dockerfile.gateway")


# ---- consistency ---------------------------------------------------------------

def test_ports_agree_everywhere(rendered):
    _, docs = rendered
    assert "EXPOSE 8080 8082" in dockerfile("Dockerfile.serve")
    assert "EXPOSE 8000" in dockerfile("Dockerfile.gateway")
    for var, port in (("TS_INFERENCE_PORT", 8080), ("TS_MANAGEMENT_PORT", 8081),
                      ("TS_METRICS_PORT", 8082)):
        assert f"${{{var}:-{port}}}" in TS_SCRIPT
    serve_ports = {p["name"]: p["port"] for p in by_kind(docs, "Service")["serve"]["spec"]["ports"]}
    assert serve_ports == {"inference": 8080, "metrics": 8082}
    containers = {name: spec["containers"][0] for name, spec in pod_specs(docs)}
    assert {p["containerPort"] for p in containers["serve"]["ports"]} == {8080, 8082}
    assert {p["containerPort"] for p in containers["gateway"]["ports"]} == {8000}
    gateway_env = (ROOT / "k8s/gateway.env").read_text()
    assert "TORCHSERVE_URL=http://serve:8080" in gateway_env
    assert "TORCHSERVE_MANAGEMENT_URL" not in gateway_env
    env = compose()["services"]["gateway"]["environment"]
    assert env["TORCHSERVE_URL"] == "http://serve:8080"
    assert "TORCHSERVE_MANAGEMENT_URL" not in env
    assert compose()["services"]["serve"]["environment"]["DATABASE_URL"] == env["DATABASE_URL"]
    defaults = Settings(jwt_secret="x" * 32)
    assert defaults.torchserve_url.endswith(":8080")
    assert defaults.torchserve_management_url == "http://127.0.0.1:8081"


def test_env_var_names_are_ones_the_code_reads(rendered):
    _, docs = rendered
    k8s_gateway = set(re.findall(r"^([A-Z_]+)=", (ROOT / "k8s/gateway.env").read_text(), re.M))
    containers = {name: spec["containers"][0] for name, spec in pod_specs(docs)}
    k8s_gateway |= {e["name"] for e in containers["gateway"]["env"]}
    compose_gateway = set(compose()["services"]["gateway"]["environment"])
    gateway_image = set(re.findall(r"\b([A-Z_]+)=", dockerfile("Dockerfile.gateway")))
    for names in (k8s_gateway, compose_gateway, gateway_image - {"PIP_NO_CACHE_DIR",
                  "PIP_DISABLE_PIP_VERSION_CHECK", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}):
        assert names <= GATEWAY_VARS, names - GATEWAY_VARS
    # The serve image and pod: TorchServe's variables and the model agent's settings.
    serve_vars = TS_VARS | SETTINGS_VARS | {"POSTGRES_PASSWORD"}
    pod = dict(pod_specs(docs))["serve"]["containers"]
    serve_env = {e["name"] for container in pod for e in container.get("env", [])}
    serve_env |= set(compose()["services"]["serve"]["environment"])
    serve_image = set(re.findall(r"\b(TS_[A-Z_]+|MODEL_STORE|MODEL_SEED|AGENT_[A-Z_]+)=",
                                 dockerfile("Dockerfile.serve")))
    assert serve_env | serve_image <= serve_vars, (serve_env | serve_image) - serve_vars


def test_images_and_start_scripts_agree(rendered):
    _, docs = rendered
    images = {name: spec["containers"][0]["image"] for name, spec in pod_specs(docs)}
    services = compose()["services"]
    assert images["serve"] == services["serve"]["image"] == "image-classifier-serve:1.0"
    assert images["gateway"] == services["gateway"]["image"] == "image-classifier-gateway:1.0"
    # One replica is TorchServe and its model agent: the image and `make run` start both
    # with start-serve.sh; the pod runs them as two containers of the same image.
    assert 'ENTRYPOINT ["/app/scripts/start-serve.sh"]' in dockerfile("Dockerfile.serve")
    assert 'ENTRYPOINT ["/app/scripts/start-gateway.sh"]' in dockerfile("Dockerfile.gateway")
    makefile_run = (ROOT / "scripts/run-local.sh").read_text()
    assert "scripts/start-serve.sh" in makefile_run and "scripts/start-gateway.sh" in makefile_run
    serve_script = (ROOT / "scripts/start-serve.sh").read_text()
    assert "scripts/start-torchserve.sh" in serve_script and "python -m agent" in serve_script
    # Retention: the CronJob and the Compose service run the same purge, from the gateway image.
    purge = dict(pod_specs(docs))["prediction-log-purge"]["containers"][0]
    assert purge["image"] == images["gateway"] == services["purge"]["image"]
    assert purge["command"] == ["python", "-m", "gateway.cli.db", "purge"]
    assert services["purge"]["entrypoint"][:4] == purge["command"]
    assert by_kind(docs, "CronJob")["prediction-log-purge"]["spec"]["concurrencyPolicy"] == "Forbid"
    pod = {c["name"]: c for c in dict(pod_specs(docs))["serve"]["containers"]}
    assert pod["torchserve"]["command"] == ["/app/scripts/start-torchserve.sh"]
    assert pod["model-agent"]["command"] == ["python", "-m", "agent"]
    assert pod["model-agent"]["image"] == images["serve"]
    # The serve pod mounts its config map over /app/config: every file the start
    # script reads from there must be in it, identical to the one the image has.
    for name in ("config.properties", "log4j2.xml"):
        assert f"$here/config/{name}" in TS_SCRIPT
        assert f"torchserve/{name}" in (ROOT / "k8s/kustomization.yaml").read_text()
        assert (ROOT / "k8s/torchserve" / name).read_text() == (ROOT / "config" / name).read_text()
    assert "COPY config/config.properties config/log4j2.xml /app/config/" in \
        dockerfile("Dockerfile.serve")


def test_probe_paths_exist(rendered):
    _, docs = rendered
    from gateway.app import create_app

    app = create_app(Settings(jwt_secret="x" * 32, prediction_log=False))
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    containers = {name: spec["containers"][0] for name, spec in pod_specs(docs)}
    for probe in ("readinessProbe", "livenessProbe"):
        assert containers["gateway"][probe]["httpGet"]["path"] in routes
    assert "/healthz" in dockerfile("Dockerfile.gateway")
    ready = ["python", "-m", "agent.probe", "--url", "http://127.0.0.1:8081",
             "--agent-state", "/home/model-server/run/agent-state.json"]
    assert containers["serve"]["readinessProbe"]["exec"]["command"] == ready
    assert containers["serve"]["startupProbe"]["exec"]["command"] == ready
    assert f"CMD {json.dumps(ready)}" in dockerfile("Dockerfile.serve")
    assert "AGENT_STATE_FILE=/home/model-server/run/agent-state.json" in dockerfile("Dockerfile.serve")
    # The serve image holds the agent and the code it shares with the gateway, no gateway/.
    copied = re.findall(r"^COPY (?!--from)(.*)$", dockerfile("Dockerfile.serve"), re.M)
    assert "core/ /app/core/" in copied and "agent/ /app/agent/" in copied
    assert not [line for line in copied if "gateway" in line], copied


def test_everything_runs_as_non_root(rendered):
    _, docs = rendered
    for name in ("Dockerfile.serve", "Dockerfile.gateway"):
        users = re.findall(r"^USER (\S+)", dockerfile(name), re.M)
        assert users and users[-1] not in ("root", "0"), name
    assert set(compose()["services"]) == {"serve", "gateway", "purge", "postgres", "redis",
                                          "prometheus", "grafana"}
    for name, service in compose()["services"].items():
        assert str(service.get("user", "0")) not in ("0", "root"), name
        assert service.get("read_only") is True and service.get("cap_drop") == ["ALL"], name
    for name, spec in pod_specs(docs):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert container["resources"]["requests"] and container["resources"]["limits"], name


def test_no_literal_secrets_in_k8s_or_compose(rendered):
    _, docs = rendered
    for path in (ROOT / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or doc["kind"] != "Secret", f"{path} defines a Secret literally"
    for name, spec in pod_specs(docs):
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if holds_secret(env["name"]):
                    assert "valueFrom" in env, (name, env["name"])
                if "value" in env:
                    assert not re.search(r"://[^:/]+:[^$@/][^@]*@", env["value"]), env
    settings = [line.split("=", 1)[0] for line in
                (ROOT / "k8s/gateway.env").read_text().splitlines() if "=" in line]
    assert not [name for name in settings if holds_secret(name)]
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if holds_secret(key) or "://" in str(value) and "@" in str(value):
                assert "${" in str(value), (name, key)


def test_management_port_is_never_exposed_outside(rendered):
    _, docs = rendered
    services = compose()["services"]
    published = {name: s.get("ports", []) for name, s in services.items() if s.get("ports")}
    assert published == {"gateway": ["${GATEWAY_PUBLISH:-8000}:8000"],  # and, on loopback:
                         "prometheus": ["${PROMETHEUS_PUBLISH:-127.0.0.1:9090}:9090"],
                         "grafana": ["${GRAFANA_PUBLISH:-127.0.0.1:3000}:3000"]}
    assert compose()["networks"]["backend"]["internal"] is True
    for name, service in by_kind(docs, "Service").items():
        ports = {p["port"] for p in service["spec"]["ports"]}
        if ports & {8080, 8081, 8082}:
            assert name == "serve" and service["spec"].get("type", "ClusterIP") == "ClusterIP"
        if service["spec"].get("type") in ("NodePort", "LoadBalancer"):
            assert ports == {8000}, name
    # TorchServe's management API: loopback only, in no Service, port list or policy.
    assert "management_address=http://127.0.0.1:" in TS_SCRIPT
    assert "8081" not in str(services["serve"].get("expose"))
    for name, service in by_kind(docs, "Service").items():
        assert 8081 not in {p["port"] for p in service["spec"]["ports"]}, name
    for name, spec in pod_specs(docs):
        for container in spec["containers"]:
            assert 8081 not in {p["containerPort"] for p in container.get("ports", [])}, name
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        for rule in policy["spec"]["ingress"]:
            assert 8081 not in {p["port"] for p in rule.get("ports", [])}, name
    policy = by_kind(docs, "NetworkPolicy")["serve-from-gateway-only"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "serve"
    for rule in policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule["ports"]}
        sources = [f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                   for f in rule["from"]]
        assert sources == ["gateway"] and ports == {8080, 8082} or ports == {8082}


def test_kubernetes_labels_and_scrape_annotations(rendered):
    _, docs = rendered
    for d in docs:
        labels = d["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "image-classifier", d["metadata"]["name"]
    deployments = by_kind(docs, "Deployment")
    for name, port in (("serve", "8082"), ("gateway", "8000")):
        annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == port
    assert deployments["gateway"]["spec"]["replicas"] == 2
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"serve", "gateway"}
    assert set(by_kind(docs, "PodDisruptionBudget")) == {"serve", "gateway"}
