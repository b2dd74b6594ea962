"""Resolve the ResNet-18 weights an archive is built from, and fingerprint them."""

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.models import ResNet18_Weights, resnet18

IMAGENET = ResNet18_Weights.IMAGENET1K_V1
DEFAULT_SEED = 0


class WeightsError(RuntimeError):
    """The requested weights cannot be had or do not fit ResNet-18."""


@dataclass
class ResolvedWeights:
    state_dict: dict
    source: str  # "imagenet", "random", or "file:<name>"
    seed: int | None = None

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


def random_weights(seed: int = DEFAULT_SEED) -> ResolvedWeights:
    torch.manual_seed(seed)
    return ResolvedWeights(resnet18(weights=None).state_dict(), "random", seed)


def imagenet_weights() -> ResolvedWeights:
    """torchvision's official weights, downloaded with its own hash check."""
    try:
        state_dict = IMAGENET.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # urllib, socket and hash errors all mean "not available"
        raise WeightsError(
            f"could not download ImageNet weights from {IMAGENET.url} ({exc}). "
            "Are you offline? Use --weights random for a test model, or --weights "
            "PATH with a local .pth file."
        ) from exc
    return ResolvedWeights(state_dict, "imagenet")


def file_weights(path: Path) -> ResolvedWeights:
    """A local state dict (plain, or wrapped under "state_dict") that must fit ResNet-18."""
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
        resnet18(weights=None).load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} does not fit ResNet-18: {exc}") from exc
    return ResolvedWeights(state_dict, f"file:{path.name}")


def resolve(spec: str, seed: int = DEFAULT_SEED) -> ResolvedWeights:
    """imagenet | random | auto | PATH."""
    if spec == "random":
        return random_weights(seed)
    if spec == "imagenet":
        return imagenet_weights()
    if spec == "auto":
        try:
            return imagenet_weights()
        except WeightsError as exc:
            print(
                "\n" + "!" * 78 + "\n"
                "!! WARNING: ImageNet weights unavailable, building with RANDOM weights.\n"
                "!! Predictions from this archive are meaningless.\n"
                f"!! Reason: {exc}\n" + "!" * 78 + "\n",
                file=sys.stderr,
            )
            return random_weights(seed)
    return file_weights(Path(spec))
