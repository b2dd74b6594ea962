"""A replica's readiness rule, written once: a model's default version has a READY
worker and, with --agent-state, the replica's model agent reported lately that its
TorchServe serves the declared default and what an active rollout routes to it (a
declared version that cannot load is the agent's reported error, not a readiness
failure).

TorchServe's /ping says Healthy while workers crash, so readiness asks the management
API on loopback instead. Standard library only, so that the probe (agent.probe), which
the serve image runs as its health check and Kubernetes probe, starts fast; the model
agent imports ready_workers.
"""

import json
import os
import time
import urllib.error
import urllib.request


def ready_workers(description: dict) -> list[dict]:
    """The READY workers in one version's description from the management API."""
    return [w for w in description.get("workers", []) if w.get("status") == "READY"]


def default_version_ready(described: list[dict], model: str) -> tuple[bool, str]:
    """The rule on `GET /models/{model}`'s answer, which describes the default version only."""
    if not described:
        return False, f"{model} has no default version"
    default = described[0]
    ready = len(ready_workers(default))
    state = f"{ready} READY worker(s)" if ready else "no READY worker"
    return ready > 0, f"{model} {default.get('modelVersion')}: {state}"


def _get(url: str):
    with urllib.request.urlopen(url, timeout=3) as resp:
        return json.load(resp)


def check(url: str, model: str | None = None) -> tuple[bool, str]:
    """The rule for `model`, or for every model registered when it is None."""
    try:
        models = [model] if model else [m["modelName"] for m in _get(f"{url}/models")["models"]]
        if not models:
            return False, "no model is registered"
        for name in models:
            ready, reason = default_version_ready(_get(f"{url}/models/{name}"), name)
            if not ready:
                return False, reason
    except urllib.error.HTTPError as exc:
        return False, f"{model or 'models'}: management API answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"management API unreachable: {exc}"
    return True, reason


# The agent writes its state every AGENT_INTERVAL_SECONDS (2 s): older than this, it is
# not running.
AGENT_STATE_MAX_AGE = 30


def agent_ready(state_file: str) -> tuple[bool, str]:
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
        age = time.time() - os.stat(state_file).st_mtime
    except (OSError, ValueError) as exc:
        return False, f"no model agent state: {exc}"
    if age > AGENT_STATE_MAX_AGE:
        return False, f"model agent state is {age:.0f} s old: is the agent running?"
    return state.get("ready") is True, f"model agent: {state.get('reason')}"
