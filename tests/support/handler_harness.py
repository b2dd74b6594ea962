"""The TorchServe handler driven in this process, as TorchServe's worker drives it."""

from pathlib import Path
from types import SimpleNamespace

import ts
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from handler import resnet_handler
from modelbuild.handler_files import MODEL_CONFIG


class FakeContext(SimpleNamespace):
    """The parts of TorchServe's Context the handler uses; statuses and headers are kept
    per request."""

    def set_response_status(self, code, phrase, idx):
        self.statuses[idx] = (code, phrase)

    def set_response_header(self, idx, key, value):
        self.headers.setdefault(idx, {})[key] = value

    def get_request_header(self, idx, key):
        return f"req-{idx}" if key == "X-Request-ID" else None


def load_handler(model_dir, version: str = "1.0") -> resnet_handler.ResNetHandler:
    """A handler initialised on a model directory (archive.write_model_files)."""
    handler = resnet_handler.ResNetHandler()
    handler.initialize(FakeContext(
        system_properties={"model_dir": str(model_dir)},
        manifest={"model": {"modelName": "classifier", "modelVersion": version,
                            "serializedFile": "model.pt"}},
        model_yaml_config=MODEL_CONFIG, statuses={}, headers={},
        metrics=MetricsCacheYamlImpl(str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))))
    return handler


def run(handler, rows):
    """preprocess -> inference -> postprocess on one batch of request rows."""
    handler.context.statuses, handler.context.headers = {}, {}
    return handler.postprocess(handler.inference(handler.preprocess(rows)))
