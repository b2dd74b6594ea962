"""The Kubernetes manifests, rendered by kustomize and run with `podman kube play`.

No Kubernetes API server can be had on these machines, so the deploy test runs
the manifests' own pod specs (images, commands, securityContext, env from
ConfigMaps and Secrets, volumes, probes) with podman 4.3, changing in its copy only
what podman cannot take as it is:

- Secrets become `podman secret create NAME F`, F being the Secret's `data` map as
  JSON (the only way kube play reads them for env). Secret volumes become named volumes
  that the test fills with the Secret's items, owned by root and the pod's fsGroup with
  the volume's defaultMode, as the kubelet writes them: kube play 4.3 reads a volume's
  Secret in another shape than env's and mounts an empty directory (the image's own
  files showed through it). `refresh_secret` rewrites them, as the kubelet does when a
  Secret changes.
- The StatefulSet runs as a Deployment with the same pod template, its volume
  claim as a named volume (kube play ignores StatefulSets).
- emptyDirs become tmpfs volumes owned by the pod's fsGroup, as the kubelet makes
  them (kube play leaves them root-only).
- Init containers run first as a pod of their own, with the same pod spec, and must
  exit 0 before the workload's pod starts (podman 4.3 gives up on a pod whose init
  container it fails to remove: "container state improper").
- `$(NAME)` references in env values are written out (kube play leaves them).
- Services are ignored and there is no cluster DNS: the serve and gateway pods get
  hostAliases that map each Service's name to the pod behind it, as the Service
  would; so PostgreSQL and Redis are played first, then serve, then the gateway.
- kube play publishes every containerPort on 0.0.0.0: all are dropped but the
  gateway's, published on 127.0.0.1 and a free port; probes that named a dropped
  port get its number. The gateway runs one replica, since each would bind that port.

Services, NetworkPolicies, HorizontalPodAutoscalers and PodDisruptionBudgets need a
real cluster; tests/static checks them.
"""

import base64
import copy
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from devstack.servers import ROOT
from devstack.stack import signing_keys
from modelbuild import signing

KUBECTL = Path(sys.executable).parent / "kubectl"
WORKLOADS = ("Deployment", "StatefulSet")
FRONT = ("serve", "gateway")  # played after the backends, in this order


def render(work: Path) -> str:
    """`kubectl kustomize` of a copy of k8s/ with throwaway secrets (as `make k8s-secrets`
    writes them)."""
    work.mkdir(parents=True, exist_ok=True)
    copy_dir = work / "k8s"
    shutil.copytree(ROOT / "k8s", copy_dir, ignore=shutil.ignore_patterns("secrets"))
    (copy_dir / "secrets").mkdir()
    (copy_dir / "secrets/jwt-secret").write_text("x" * 48)
    signing_keys(copy_dir / "secrets/jwt-keys.json")
    (copy_dir / "secrets/postgres-password").write_text("p" * 48)
    shutil.copy(ROOT / "config/users.json", copy_dir / "secrets/users.json")
    shutil.copy(signing.new_key(work / "model-signing").with_name(signing.TRUSTED_KEYS),
                copy_dir / "secrets/model-trusted-keys.pem")
    result = subprocess.run([str(KUBECTL), "kustomize", str(copy_dir)], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout


def pod_name(workload: dict) -> str:
    """The pod kube play makes for a Deployment."""
    return f"{workload['metadata']['name']}-pod-0"


class KubePlay:
    """Plays the backends, then the gateway pod pointed at them; tears everything down."""

    def __init__(self, engine, docs: list[dict], work: Path, gateway_port: int):
        self.engine, self.work = engine, work
        self.gateway_port = gateway_port
        self.volumes_before = set(engine("volume", "ls", "-q").stdout.split())
        self.config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
        self.secrets = [d for d in docs if d["kind"] == "Secret"]
        self.services = [d for d in docs if d["kind"] == "Service"]
        self.secret_data = {d["metadata"]["name"]: d["data"] for d in self.secrets}
        self.secret_volumes: dict[str, list[tuple[str, dict]]] = {}  # Secret -> (volume, source)
        self.workloads = {d["metadata"]["name"]: self._as_deployment(d)
                          for d in docs if d["kind"] in WORKLOADS}
        self.played: list[Path] = []
        self.started: set[str] = set()
        self.init_logs = ""

    # ---- the copy's changes -------------------------------------------------------
    def _as_deployment(self, workload: dict) -> dict:
        workload = copy.deepcopy(workload)
        spec = workload["spec"]
        pod = spec["template"]["spec"]
        for claim in spec.pop("volumeClaimTemplates", []):
            # A named volume, as the claim's PersistentVolume would be: podman fills a new
            # one from the image (owner included), as fsGroup makes a claim writable.
            volume = f"{workload['metadata']['name']}-{claim['metadata']['name']}"
            self.engine("volume", "create", volume)
            pod.setdefault("volumes", []).append({"name": claim["metadata"]["name"],
                                                  "persistentVolumeClaim": {"claimName": volume}})
        fs_group = pod.get("securityContext", {}).get("fsGroup")
        for volume in pod.get("volumes", []):
            name = f"{workload['metadata']['name']}-{volume['name']}"
            if "emptyDir" in volume:
                # kube play makes emptyDirs root-only; the kubelet gives them to fsGroup.
                owner = f"gid={fs_group},mode=2775" if fs_group is not None else "mode=1777"
                self.engine("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
                            "--opt", f"o={owner}", name)
                volume.pop("emptyDir")
                volume["persistentVolumeClaim"] = {"claimName": name}
            elif "secret" in volume:
                self.engine("volume", "create", name)
                source = {**volume.pop("secret"), "gid": fs_group or 0}
                self.secret_volumes.setdefault(source["secretName"], []).append((name, source))
                self._fill(name, source)
                volume["persistentVolumeClaim"] = {"claimName": name}
        spec.pop("serviceName", None)
        workload["kind"] = "Deployment"
        for container in pod.get("initContainers", []) + pod["containers"]:
            self._expand_env(container)

        published = workload["metadata"]["name"] == "gateway"
        if published:
            spec["replicas"] = 1  # every replica would bind the one published host port
        for container in pod["containers"]:
            numbers = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                for action in ("httpGet", "tcpSocket"):
                    target = container.get(probe, {}).get(action)
                    if target and isinstance(target["port"], str):
                        target["port"] = numbers[target["port"]]
            if published:
                for port in container.get("ports", []):
                    port.update(hostIP="127.0.0.1", hostPort=self.gateway_port)
            else:
                container.pop("ports", None)
        return workload

    def _fill(self, volume: str, source: dict) -> None:
        """Write a secret volume's files: its items (all keys without items), root-owned,
        group fsGroup, mode defaultMode (0644 by default), as the kubelet does."""
        data = self.secret_data[source["secretName"]]
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            for item in items:
                content = base64.b64decode(data[item["key"]])
                info = tarfile.TarInfo(item["path"])
                info.size, info.gid = len(content), source["gid"]
                info.mode = item.get("mode", source.get("defaultMode", 0o644))
                tar.addfile(info, io.BytesIO(content))
        path = self.work / f"{volume}.tar"
        path.write_bytes(archive.getvalue())
        self.engine("volume", "import", volume, path)

    def refresh_secret(self, name: str, files: dict[str, bytes]) -> None:
        """The Secret `name` changed (`kubectl apply`): its new files reach the running
        pods' volumes, as the kubelet's sync brings them."""
        self.secret_data[name] = {**self.secret_data[name],
                                  **{k: base64.b64encode(v).decode() for k, v in files.items()}}
        for volume, source in self.secret_volumes.get(name, []):
            self._fill(volume, source)

    def _expand_env(self, container: dict) -> None:
        """Write out `$(NAME)` references to earlier variables, which the kubelet expands
        and kube play does not (the secrets here are the test's throwaway ones)."""
        known = {}
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                known[env["name"]] = base64.b64decode(
                    self.secret_data[ref["name"]][ref["key"]]).decode()
            elif "value" in env:
                env["value"] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                      lambda m: known.get(m[1], m[0]), env["value"])
                known[env["name"]] = env["value"]

    def _service_aliases(self) -> list[dict]:
        """hostAliases: each backend Service's name -> the address of the pod it selects
        (our Services keep port numbers, so a name is all the gateway needs)."""
        aliases = []
        for service in self.services:
            selector = service["spec"]["selector"].items()
            for name, workload in self.workloads.items():
                if name in self.started and selector <= workload["spec"]["template"]["metadata"][
                        "labels"].items():
                    aliases.append({"ip": self.pod_ip(pod_name(workload)),
                                    "hostnames": [service["metadata"]["name"]]})
        return aliases

    # ---- running ------------------------------------------------------------------
    def pod_ip(self, pod: str) -> str:
        infra = self.engine("pod", "inspect", pod, "--format", "{{.InfraContainerID}}").stdout
        return self.engine("inspect", infra.strip(), "--format",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
                           ).stdout.strip()

    def _play(self, name: str, workloads: list[dict]) -> None:
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all([*self.config_maps, *workloads]))
        self.played.append(path)
        self.engine("kube", "play", path, timeout=300)

    def start_backends(self) -> None:
        """Every workload but serve and the gateway (PostgreSQL, Redis)."""
        for secret in self.secrets:
            data = self.work / f"{secret['metadata']['name']}.json"
            data.write_text(json.dumps(secret["data"]))
            self.engine("secret", "create", secret["metadata"]["name"], data)
        backends = [n for n in self.workloads if n not in FRONT]
        self._play("backends", [self.workloads[n] for n in backends])
        self.started.update(backends)

    def start(self, name: str) -> None:
        """serve or the gateway, with the Services started so far as hostAliases, after
        its init containers."""
        workload = self.workloads[name]
        pod = workload["spec"]["template"]["spec"]
        pod["hostAliases"] = self._service_aliases()
        self._run_init_containers(name, pod)
        self._play(name, [workload])
        self.started.add(name)

    def _run_init_containers(self, workload: str, pod: dict) -> None:
        init = pod.pop("initContainers", [])
        if not init:
            return
        name = f"{workload}-init"
        self._play(name, [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {**pod, "containers": init, "restartPolicy": "Never"}}])
        for container in init:
            full = f"{name}-{container['name']}"
            code = self.engine("wait", full, timeout=600).stdout.strip()
            if code != "0":
                raise RuntimeError(f"init container {full} exited {code}:\n"
                                   f"{self.engine.logs(full)}")
            self.init_logs += self.engine.logs(full)

    def containers(self, workload: str) -> dict[str, str]:
        """Container name in the manifest -> podman's name for it."""
        pod = self.workloads[workload]["spec"]["template"]["spec"]
        return {c["name"]: f"{pod_name(self.workloads[workload])}-{c['name']}"
                for c in pod["containers"]}

    def stop(self) -> None:
        for path in reversed(self.played):
            self.engine("kube", "play", "--down", path, check=False, timeout=300)
        for secret in self.secrets:
            self.engine("secret", "rm", secret["metadata"]["name"], check=False)
        for volume in set(self.engine("volume", "ls", "-q").stdout.split()) - self.volumes_before:
            self.engine("volume", "rm", "-f", volume, check=False)
