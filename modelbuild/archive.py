"""Build model_store/<name>-<version>.mar with torch-model-archiver, signed (beside it,
<name>-<version>.mar.sig) with MODEL_SIGNING_KEY or --signing-key when one is given.

    python -m modelbuild.archive --version 1.0 --weights auto
    python -m modelbuild.archive --version 1.0-int8 --weights imagenet --variant int8
    python -m modelbuild.archive --version 2.0 --weights imagenet --arch resnet101
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from core.served_model import MODEL_NAME
from handler.resnet_handler import load_state_dict
from modelbuild import quantize, signing
from modelbuild import weights as weights_mod
from modelbuild.handler_files import CONFIG_FILE, HANDLER_FILE

SERIALIZED_FILE = "model.pt"
VARIANTS = ("fp32", "int8")


def archive_path(export_dir: Path, version: str) -> Path:
    return export_dir / f"{MODEL_NAME}-{version}.mar"


def write_model_files(weights: weights_mod.ResolvedWeights, work: Path,
                      variant: str = "fp32", min_agreement: float | None = None) -> dict:
    """The files the handler reads from its model directory; returns weights.json's record.

    fp32: the state dict. int8: the quantised TorchScript model, built only if it
    agrees with fp32 (modelbuild.quantize), with its agreement report in weights.json.
    """
    record = {"arch": weights.arch, "source": weights.source, "sha256": weights.sha256,
              "seed": weights.seed, "variant": variant}
    if variant == "int8":
        model, report = quantize.int8_variant(
            load_state_dict(weights.state_dict, weights.arch), min_agreement)
        torch.jit.save(model, str(work / SERIALIZED_FILE))
        record.update(report)
    else:
        torch.save(weights.state_dict, work / SERIALIZED_FILE)
    write_labels(work, record)
    return record


def write_labels(work: Path, record: dict) -> None:
    """index_to_name.json (ImageNet's classes) and weights.json (`record`)."""
    categories = weights_mod.IMAGENET_CATEGORIES
    (work / "index_to_name.json").write_text(
        json.dumps({str(i): name for i, name in enumerate(categories)})
    )
    (work / "weights.json").write_text(json.dumps(record))


def build(version: str, weights: weights_mod.ResolvedWeights, export_dir: Path,
          force: bool = False, variant: str = "fp32",
          min_agreement: float | None = None, signing_key: Path | None = None) -> Path:
    """Write the archive and return its path; never overwrites unless forced."""
    target = archive_path(export_dir, version)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to rebuild it")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_model_files(weights, work, variant, min_agreement)
        return package(work, version, export_dir, signing_key)


def package(work: Path, version: str, export_dir: Path,
            signing_key: Path | None = None, handler: Path = HANDLER_FILE) -> Path:
    """torch-model-archiver on a model directory (write_model_files' files; a handler
    that runs no network needs no model.pt) and the shipped handler (or `handler`); the
    archive lands in export_dir, signed with `signing_key` (or MODEL_SIGNING_KEY's) if
    there is one."""
    target = archive_path(export_dir, version)
    export_dir.mkdir(parents=True, exist_ok=True)
    serialized = work / SERIALIZED_FILE
    subprocess.run(
        [
            str(Path(sys.executable).with_name("torch-model-archiver")),
            "--model-name", MODEL_NAME,
            "--version", version,
            *(["--serialized-file", str(serialized)] if serialized.exists() else []),
            "--handler", str(handler),
            "--extra-files", f"{work / 'index_to_name.json'},{work / 'weights.json'}",
            "--config-file", str(CONFIG_FILE),
            "--export-path", str(work),
        ],
        check=True,
        # The archiver stages files in $TMPDIR/<model name>: a private TMPDIR
        # keeps concurrent builds from trampling each other.
        env={**os.environ, "TMPDIR": str(work)},
    )
    shutil.move(work / f"{MODEL_NAME}.mar", target)
    if key := signing_key or os.environ.get("MODEL_SIGNING_KEY"):
        signing.sign(target, Path(key))
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="1.0", help="model version (default 1.0)")
    parser.add_argument("--weights", default="auto",
                        help="imagenet | random | auto | PATH to a .pth state dict")
    parser.add_argument("--seed", type=int, default=weights_mod.DEFAULT_SEED,
                        help="seed for --weights random")
    parser.add_argument("--arch", choices=weights_mod.ARCHS, default=weights_mod.DEFAULT_ARCH,
                        help="torchvision architecture (default resnet18)")
    parser.add_argument("--export-path", type=Path, default=Path("model_store"))
    parser.add_argument("--force", action="store_true", help="overwrite an existing archive")
    parser.add_argument("--signing-key", type=Path,
                        help="sign it with this EC private key (default: MODEL_SIGNING_KEY)")
    parser.add_argument("--variant", choices=VARIANTS, default="fp32",
                        help="fp32 (default) or int8: quantised, built only if its top-1 "
                             "agrees with fp32 on >= 99%% of 200 fixed images")
    args = parser.parse_args(argv)
    try:
        resolved = weights_mod.resolve(args.weights, args.seed, args.arch)
        target = build(args.version, resolved, args.export_path, args.force, args.variant,
                       signing_key=args.signing_key)
    except (weights_mod.WeightsError, FileExistsError, quantize.VariantRejected) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"built {target} ({resolved.arch} {args.variant}, weights: {resolved.source}, "
          f"sha256 {resolved.sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
