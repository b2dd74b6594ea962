"""The code's structure rules that a reader relies on (docs/architecture.md)."""

import dataclasses
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from core.database.tables import predictions
from devstack.servers import ROOT
from gateway.prediction_log.store import PredictionRow


def in_fresh_process(code: str) -> str:
    """Run code in a new interpreter from the repository root; its stdout."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_modelctl_runs_without_flask():
    """The operator CLI and what it imports (errors, TorchServe client, rollouts, metrics)
    are plain Python."""
    probe = ("import runpy, sys\n"
             "sys.argv = ['modelctl', '--help']\n"
             "try:\n"
             "    runpy.run_module('gateway.cli.modelctl', run_name='__main__')\n"
             "except SystemExit as exit:\n"
             "    assert exit.code == 0, exit.code\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug'))\n"
             "print('LOADED', loaded)\n")
    output = in_fresh_process(probe)
    assert "usage: modelctl" in output
    assert "LOADED []" in output


def test_database_commands_run_where_the_metrics_directory_is_not_made_yet(tmp_path):
    """`python -m gateway.cli.db upgrade` runs first in the gateway's container and the
    migrate init container, and the purge beside them, all with the gateway's
    PROMETHEUS_MULTIPROC_DIR, which gateway/serve.py makes only later: they load no metrics."""
    for command in (["upgrade"], ["current"], ["check"], ["purge", "--days", "30"]):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.cli.db", "--database-url",
             f"sqlite:///{tmp_path / 'log.db'}", *command], cwd=ROOT, capture_output=True,
            text=True, timeout=120,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "absent")})
        assert result.returncode == 0, (command, result.stderr)


def test_test_modules_have_unique_names():
    """pytest imports every test module by its base name: two alike stop the whole run."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_nothing_edits_the_import_path():
    needle = "sys." + "path"
    offenders = [str(path.relative_to(ROOT))
                 for folder in ("bench", "tests", "devstack", "core", "agent", "gateway", "handler",
                                "modelbuild", "config")
                 for path in (ROOT / folder).rglob("*.py") if needle in path.read_text()]
    assert offenders == []


def test_prediction_row_has_exactly_the_tables_columns():
    assert [f.name for f in dataclasses.fields(PredictionRow)] == \
        [c.name for c in predictions.columns if c.name not in ("id", "outbox_id")]
    with pytest.raises(TypeError, match="missing"):
        PredictionRow(request_id="r1")  # a forgotten column is an error, not a NULL


def test_pixel_limit_above_pillows_own_threshold():
    """95 MP is above Pillow's process-wide bomb threshold (about 89 MP); the gateway's
    answer follows MAX_IMAGE_PIXELS alone. Run as the gateway runs: in a process of its
    own, where no handler has changed Pillow's threshold, set up as create_app sets it."""
    probe = ("from gateway.app import create_app\n"
             "from core.errors import ApiError\n"
             "from gateway.predictions.imagecheck import check_upload\n"
             "from core.settings import Settings\n"
             "from devstack import images\n"
             "create_app(Settings(jwt_secret='k' * 40, prediction_log=False))\n"
             "for limit in (100_000_000, 90_000_000):\n"
             "    try:\n"
             "        check_upload(images.bomb_png(10_000, 9_500), 10_000_000, limit)\n"
             "        print('accepted')\n"
             "    except ApiError as exc:\n"
             "        print(exc.status, exc.detail)\n")
    assert in_fresh_process(probe).splitlines() == [
        "accepted", "422 image has 95000000 pixels, the limit is 90000000"]


PACKAGES = ("core", "agent", "gateway", "modelbuild")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})


def test_layers_point_down():
    """pyproject.toml's contracts: layers, Flask only in the HTTP adapters, nothing of the
    gateway in the serve image's code, no cycles."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.parametrize("module, planted, broken", [
    ("core/catalog.py", "import gateway.models.versions", "The serve image's code"),
    ("gateway/prediction_log/store.py", "import gateway.predictions.pipeline", "Layers"),
    ("gateway/models/versions.py", "import flask", "Only the HTTP adapters"),
    ("gateway/identity/claims.py", "import gateway.identity.tokens", "No import cycles"),
    ("gateway/predictions/readiness.py", "import agent.readiness", "The gateway image's code"),
])
def test_a_planted_import_breaks_the_contract(tmp_path, module, planted, broken):
    """The contract is not vacuous: each kind of upward or forbidden import fails it."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / module
    target.write_text(f"{planted}\n{target.read_text()}")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_every_command_line_is_installed_and_answers_help():
    """pyproject.toml's console scripts, as `make install` puts them on PATH."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"modelctl", "gateway-db", "gateway-users", "gateway-keys",
                            "gateway-log-keys", "model-agent", "replica-ready"}
    for name in scripts:
        result = subprocess.run([str(Path(sys.executable).with_name(name)), "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and f"usage: {name}" in result.stdout, (name, result.stderr)


def test_the_log_keys_command_adds_a_current_key(tmp_path):
    keys = tmp_path / "log-keys.json"
    for kid in ("k1", "k2"):
        result = subprocess.run([str(Path(sys.executable).with_name("gateway-log-keys")),
                                 "new-key", str(keys)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert f"new rows are keyed with {kid}" in result.stdout
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
