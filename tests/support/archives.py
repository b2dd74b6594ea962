"""Archives made from a good one for the tests: a version whose handler raises in
`initialize` (a valid archive that cannot load), and one with a byte flipped."""

import json
import zipfile
from pathlib import Path

MANIFEST = "MAR-INF/MANIFEST.json"


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
    return dest


def flipped(good: Path) -> bytes:
    """`good`'s bytes with the one in the middle inverted."""
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    return bytes(data)
