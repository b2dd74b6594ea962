"""The served model: its name, and what its handler configuration fixes for everybody
who talks to it.

handler/model-config.yaml is packed into every archive and read by TorchServe and the
handler; the gateway (its /v2 batch bound and top-k), the archive builder and the bench
read the same file through HandlerConfig.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

MODEL_NAME = "classifier"  # the served model's name: its versions may be any ResNet
MODEL_CONFIG_FILE = Path(__file__).resolve().parents[1] / "handler" / "model-config.yaml"


@dataclass(frozen=True)
class HandlerConfig:
    batch_size: int  # TorchServe's batchSize: the most images a /v2 call may carry
    top_k: int  # the classes each answer carries, best first
    max_image_pixels: int  # the largest image the handler decodes

    @classmethod
    def read(cls, path: Path | str = MODEL_CONFIG_FILE) -> "HandlerConfig":
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return cls(batch_size=int(config["batchSize"]), top_k=int(config["handler"]["top_k"]),
                   max_image_pixels=int(config["handler"]["max_image_pixels"]))
