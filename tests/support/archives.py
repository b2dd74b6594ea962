"""Archives for the tests: made from a good one (a version whose handler raises in
`initialize`, a valid archive that cannot load; one with a byte flipped), and a model
that is not ours (a torchvision network with TorchServe's built-in image_classifier
handler)."""

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torchvision.models import mobilenet_v3_small

from modelbuild import signing
from modelbuild.weights import IMAGENET_CATEGORIES

MANIFEST = "MAR-INF/MANIFEST.json"


def signed(archive: Path) -> Path:
    """The archive, signed (NAME.mar.sig beside it) with the run's key, MODEL_SIGNING_KEY."""
    signing.sign(archive, Path(os.environ["MODEL_SIGNING_KEY"]))
    return archive


def one_label_changed(good: Path, dest: Path) -> Path:
    """`good`'s archive with one byte of its class names changed, still a valid archive,
    carrying `good`'s signature: what an attacker who edits a signed archive has."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "index_to_name.json":
                data = data.replace(b"tench", b"tencH", 1)
            out.writestr(info, data)
    dest.with_name(dest.name + ".sig").write_bytes(good.with_name(good.name + ".sig").read_bytes())
    return dest


def raising_in_initialize(good: Path, dest_dir: Path, version: str) -> Path:
    """classifier-<version>.mar: `good`'s files, its manifest's version changed, its
    handler raising as its first step of initialize()."""
    dest = dest_dir / f"classifier-{version}.mar"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dest, "w") as out:
        manifest = json.loads(src.read(MANIFEST))
        handler = manifest["model"]["handler"]
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == MANIFEST:
                manifest["model"]["modelVersion"] = version
                data = json.dumps(manifest).encode()
            elif info.filename == handler:
                marker = b"    def initialize(self, context):\n"
                assert marker in data, "the handler's initialize() moved"
                data = data.replace(marker, marker + b"        raise RuntimeError("
                                    b"'this version cannot load (a test)')\n", 1)
            out.writestr(info, data)
    return signed(dest)


def flipped(good: Path) -> bytes:
    """`good`'s bytes with the one in the middle inverted."""
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


def builtin_image_classifier(dest_dir: Path, name: str, version: str, seed: int) -> Path:
    """<name>-<version>.mar: a seeded, untrained MobileNetV3-small as TorchScript, with
    TorchServe's own `image_classifier` handler and ImageNet's class names, as a team
    that is not ours would archive it."""
    dest = dest_dir / f"{name}-{version}.mar"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(seed)
        network = mobilenet_v3_small(weights=None).eval()
        torch.jit.save(torch.jit.trace(network, torch.zeros(1, 3, 224, 224)), work / "model.pt")
        (work / "index_to_name.json").write_text(
            json.dumps({str(i): label for i, label in enumerate(IMAGENET_CATEGORIES)}))
        subprocess.run(
            [str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", name,
             "--version", version, "--serialized-file", str(work / "model.pt"),
             "--handler", "image_classifier", "--extra-files", str(work / "index_to_name.json"),
             "--export-path", str(work)],
            check=True, env={**os.environ, "TMPDIR": str(work)})
        (work / f"{name}.mar").replace(dest)
    return signed(dest)
