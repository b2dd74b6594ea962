"""Resolve the weights an archive is built from (torchvision's ResNet family), and
fingerprint them."""

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import get_model, get_model_weights

ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
DEFAULT_ARCH = "resnet18"
DEFAULT_SEED = 0
# The 1000 ImageNet classes, the same list for every architecture here.
IMAGENET_CATEGORIES = get_model_weights(DEFAULT_ARCH).IMAGENET1K_V1.meta["categories"]


class WeightsError(RuntimeError):
    """The requested weights cannot be had or do not fit the architecture."""


@dataclass
class ResolvedWeights:
    state_dict: dict
    source: str  # "imagenet", "random", or "file:<name>"
    seed: int | None = None
    arch: str = DEFAULT_ARCH

    @property
    def sha256(self) -> str:
        return state_dict_sha256(self.state_dict)


def state_dict_sha256(state_dict: dict) -> str:
    """Hash of the tensors themselves: torch.save files differ run to run, tensors do not."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise WeightsError(f"architecture {arch!r} is not one of {', '.join(ARCHS)}")
    return arch


def random_weights(seed: int = DEFAULT_SEED, arch: str = DEFAULT_ARCH) -> ResolvedWeights:
    torch.manual_seed(seed)
    return ResolvedWeights(get_model(check_arch(arch), weights=None).state_dict(), "random",
                           seed, arch)


def imagenet_weights(arch: str = DEFAULT_ARCH) -> ResolvedWeights:
    """torchvision's official weights, downloaded with its own hash check."""
    official = get_model_weights(check_arch(arch)).IMAGENET1K_V1
    try:
        state_dict = official.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib, socket and hash errors all mean "not available"
        raise WeightsError(
            f"could not download ImageNet weights from {official.url} ({exc}). "
            "Are you offline? Use --weights random for a test model, or --weights "
            "PATH with a local .pth file."
        ) from exc
    return ResolvedWeights(state_dict, "imagenet", arch=arch)


def file_weights(path: Path, arch: str = DEFAULT_ARCH) -> ResolvedWeights:
    """A local state dict (plain, or wrapped under "state_dict") that must fit the
    architecture."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path} is not a loadable torch state dict: {exc}") from exc
    state_dict = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state_dict, dict):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    try:
        get_model(check_arch(arch), weights=None).load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit {arch}: {exc}") from exc
    return ResolvedWeights(state_dict, f"file:{path.name}", arch=arch)


def resolve(spec: str, seed: int = DEFAULT_SEED, arch: str = DEFAULT_ARCH) -> ResolvedWeights:
    """imagenet | random | auto | PATH, for one of ARCHS."""
    if spec == "random":
        return random_weights(seed, arch)
    if spec == "imagenet":
        return imagenet_weights(arch)
    if spec == "auto":
        try:
            return imagenet_weights(arch)
        except WeightsError as exc:
            print(
                "\n" + "!" * 78 + "\n"
                "!! WARNING: ImageNet weights unavailable, building with RANDOM weights.\n"
                "!! Predictions from this archive are meaningless.\n"
                f"!! Reason: {exc}\n" + "!" * 78 + "\n",
                file=sys.stderr,
            )
            return random_weights(seed, arch)
    return file_weights(Path(spec), arch)
