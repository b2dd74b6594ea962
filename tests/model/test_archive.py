"""Archive builder: weights resolution, fingerprints, the .mar it writes."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
import torch

from devstack.servers import ROOT
from modelbuild import weights


def test_random_weights_are_deterministic():
    assert weights.random_weights(0).sha256 == weights.random_weights(0).sha256
    assert weights.random_weights(0).sha256 != weights.random_weights(1).sha256


def test_local_pth_round_trip(tmp_path):
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": weights.random_weights(3).state_dict}, path)
    resolved = weights.resolve(str(path))
    assert resolved.source == "file:mine.pth"
    assert resolved.sha256 == weights.random_weights(3).sha256


def test_local_pth_with_wrong_shape_is_rejected(tmp_path):
    state = weights.random_weights(0).state_dict
    state["fc.weight"] = torch.zeros(10, 512)
    state["fc.bias"] = torch.zeros(10)
    path = tmp_path / "ten_classes.pth"
    torch.save(state, path)
    with pytest.raises(weights.WeightsError, match="does not fit resnet18"):
        weights.resolve(str(path))


def test_missing_or_garbage_file_is_rejected(tmp_path):
    with pytest.raises(weights.WeightsError, match="does not exist"):
        weights.resolve(str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(weights.WeightsError, match="not a loadable"):
        weights.resolve(str(tmp_path / "junk.pth"))


def _offline_env(tmp_path):
    # A proxy on a closed port: every download fails at once, as it does offline.
    return dict(os.environ, TORCH_HOME=str(tmp_path / "torch_home"),
                https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
                HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")


def archive_cli(tmp_path, weights_spec, version, env=None):
    return subprocess.run(
        [sys.executable, "-m", "modelbuild.archive", "--weights", weights_spec, "--version", version,
         "--export-path", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=180)


def test_imagenet_offline_fails_clearly(tmp_path):
    result = archive_cli(tmp_path, "imagenet", "9.9", _offline_env(tmp_path))
    assert result.returncode == 2
    assert "could not download ImageNet weights" in result.stderr
    assert not list(tmp_path.glob("*.mar"))


def test_auto_offline_falls_back_to_random_loudly(tmp_path):
    result = archive_cli(tmp_path, "auto", "1.0", _offline_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stderr
    mar = tmp_path / "classifier-1.0.mar"
    with zipfile.ZipFile(mar) as z:
        record = json.loads(z.read("weights.json"))
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        names = set(z.namelist())
    assert record["source"] == "random"
    assert record["sha256"] == weights.random_weights(0).sha256
    assert manifest["model"]["modelName"] == "classifier"
    assert manifest["model"]["modelVersion"] == "1.0"
    assert {"index_to_name.json", "model-config.yaml", "resnet_handler.py"} <= names
    # The handler folder holds only what ships in the archive.
    shipped = {path.name for path in (ROOT / "handler").iterdir() if path.name != "__pycache__"}
    assert shipped == {"model-config.yaml", "resnet_handler.py"} and shipped <= names
    # Never overwrites an existing version unless forced.
    again = archive_cli(tmp_path, "random", "1.0")
    assert again.returncode == 2 and "exists" in again.stderr
