"""The code's structure rules that a reader relies on (README "Code map")."""

import dataclasses
import os
import subprocess
import sys

import pytest

from gateway.prediction_log import PredictionRow
from gateway.tables import predictions
from tests.support.servers import ROOT


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
             "    runpy.run_module('gateway.modelctl', run_name='__main__')\n"
             "except SystemExit as exit:\n"
             "    assert exit.code == 0, exit.code\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug'))\n"
             "print('LOADED', loaded)\n")
    output = in_fresh_process(probe)
    assert "usage: python -m gateway.modelctl" in output
    assert "LOADED []" in output


def test_database_commands_run_where_the_metrics_directory_is_not_made_yet(tmp_path):
    """`python -m gateway.db upgrade` runs first in the gateway's container and the
    migrate init container, and the purge beside them, all with the gateway's
    PROMETHEUS_MULTIPROC_DIR, which gunicorn makes only later: they load no metrics."""
    for command in (["upgrade"], ["current"], ["check"], ["purge", "--days", "30"]):
        result = subprocess.run(
            [sys.executable, "-m", "gateway.db", "--database-url",
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
    offenders = [str(path.relative_to(ROOT)) for folder in ("bench", "tests", "gateway", "handler",
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
             "from gateway.errors import ApiError\n"
             "from gateway.imagecheck import check_upload\n"
             "from gateway.settings import Settings\n"
             "from tests.support import images\n"
             "create_app(Settings(jwt_secret='k' * 40, prediction_log=False))\n"
             "for limit in (100_000_000, 90_000_000):\n"
             "    try:\n"
             "        check_upload(images.bomb_png(10_000, 9_500), 10_000_000, limit)\n"
             "        print('accepted')\n"
             "    except ApiError as exc:\n"
             "        print(exc.status, exc.detail)\n")
    assert in_fresh_process(probe).splitlines() == [
        "accepted", "422 image has 95000000 pixels, the limit is 90000000"]
