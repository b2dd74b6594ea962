"""Archives that hold only what the catalog reads: no network, no handler."""

import json
import zipfile


def mar(path, version: str, model: str = "classifier", padding: int = 0):
    """A minimal archive: the manifest, a weights record and `padding` bytes of payload."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(
            {"model": {"modelName": model, "modelVersion": version}}))
        archive.writestr("weights.json", json.dumps({"arch": "resnet18", "variant": "fp32"}))
        archive.writestr("model.pt", bytes(range(256)) * (padding // 256))
    return path
