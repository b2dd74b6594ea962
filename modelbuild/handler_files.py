"""The shipped handler's files, and its input transform as the build tools and the bench
apply it to whole batches."""

from pathlib import Path

import torch
import yaml

from core.served_model import MODEL_CONFIG_FILE, HandlerConfig
from handler.resnet_handler import transform

HANDLER_FILE = Path(__file__).resolve().parents[1] / "handler" / "resnet_handler.py"
CONFIG_FILE = MODEL_CONFIG_FILE
MODEL_CONFIG = yaml.safe_load(CONFIG_FILE.read_text(encoding="utf-8"))  # as TorchServe reads it
# The handler's pixel limit, the one value (model-config.yaml) every decode here uses too.
MAX_IMAGE_PIXELS = HandlerConfig.read().max_image_pixels


def transform_batch(payloads: list[bytes]) -> torch.Tensor:
    """Decoded, transformed and stacked as the handler does it: the model's input."""
    return torch.stack([transform(p, MAX_IMAGE_PIXELS) for p in payloads])
