"""TorchServe handler for torchvision's ResNet family (resnet18 to resnet152; fp32 eager, or
the int8 TorchScript variant). weights.json in the archive names the architecture.

Self-contained on purpose: TorchServe copies this file into the worker's model
directory and imports it as a top-level module, so it may import only what the serve
image installs (torch, torchvision, Pillow, numpy, TorchServe, OpenTelemetry) and the
standard library. TorchServe also requires exactly one class in the module, hence
ValueError and plain dicts below.

Traces: each request continues the gateway's trace (its `traceparent`) with a span
linked to the span of the batch it ran in, whose children are the batch's preprocess,
inference and postprocess. Exported as the gateway's are (core/tracing.py: the
standard OTEL_* variables, off unless a collector is named).
"""

import io
import json
import logging
import os
import time
from contextlib import nullcontext

import numpy as np
import torch
from opentelemetry import propagate, trace
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision import transforms
from torchvision.models import get_model
from ts.metrics.dimension import Dimension
from ts.torch_handler.base_handler import BaseHandler

logger = logging.getLogger(__name__)

# What each answer and `GET /models` tell about the weights a version runs.
WEIGHTS_SHOWN = ("arch", "source", "sha256", "variant", "top1_agreement", "agreement_images",
                 "passes_gate")

SERVICE_NAME = "image-classifier-handler"

IMAGENET_TRANSFORM = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white, as a viewer shows it."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Scale 16/32-bit greyscale to 8 bits (a plain convert would clip to white)."""
    values = np.asarray(img, dtype=np.float64)
    peak = 65535.0 if values.max(initial=0) <= 65535 else float(values.max())
    scaled = np.clip(values * (255.0 / peak), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def decode_image(payload: bytes, max_pixels: int) -> Image.Image:
    """Decode upload bytes into an upright RGB image or raise ValueError."""
    if not payload:
        raise ValueError("empty image")
    try:
        img = Image.open(io.BytesIO(payload))
        width, height = img.size
        if width * height > max_pixels:
            raise ValueError(f"image has {width * height} pixels, the limit is {max_pixels}")
        if img.format == "PNG":
            Image.open(io.BytesIO(payload)).verify()  # chunk CRCs, which decoding skips
        img = ImageOps.exif_transpose(img)
        img.load()
    except UnidentifiedImageError as exc:
        raise ValueError("not an image in a format Pillow can decode") from exc
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image too large: {exc}") from exc
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"image data is corrupt: {exc}") from exc
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        img = _high_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "PA") or (
        img.mode == "P" and "transparency" in img.info
    ):
        return _flatten_alpha(img)
    return img.convert("RGB")


def transform(payload: bytes, max_pixels: int) -> torch.Tensor:
    """One image's model input, or ValueError for an image that cannot be one."""
    return IMAGENET_TRANSFORM(decode_image(payload, max_pixels))


def load_state_dict(state_dict: dict, arch: str) -> torch.nn.Module:
    """The eager torchvision model `arch` (e.g. resnet101) in eval mode, channels-last
    (faster CPU convolutions, bench/HISTORY.md, "What each change did"); the bench's in-process reference uses
    this too."""
    model = get_model(arch, weights=None)
    model.load_state_dict(state_dict)
    return model.eval().to(memory_format=torch.channels_last)


def load_model(path: str, variant: str, arch: str) -> torch.nn.Module:
    """The archive's model: a state dict (fp32) or a quantised TorchScript file (int8)."""
    if variant == "int8":
        return torch.jit.load(path, map_location="cpu")
    return load_state_dict(torch.load(path, map_location="cpu", weights_only=True), arch)


def classify(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Class probabilities for a batch of transformed images."""
    with torch.inference_mode():
        logits = model(batch.contiguous(memory_format=torch.channels_last))
        return torch.softmax(logits, dim=1)


def _payload(row) -> bytes:
    """The raw bytes of one request, whether sent as a body or a form field."""
    for key in ("data", "body", "file"):
        value = row.get(key)
        if value is not None:
            break
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError("request carries no image bytes")


def _tracer() -> trace.Tracer | None:
    """This worker's tracer, exporting over OTLP, when the standard variables name a
    collector; else None: no spans (the log still names each request's trace)."""
    env = os.environ
    if not ((env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
             or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            and env.get("OTEL_SDK_DISABLED", "").lower() != "true"
            and env.get("OTEL_TRACES_EXPORTER", "otlp") != "none"):
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    named = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("handler")


class ResNetHandler(BaseHandler):
    """Classifies images with a ResNet; one bad image never fails its batch."""

    def initialize(self, context):
        self.context = context
        self.tracer = _tracer()
        self.manifest = context.manifest
        model_dir = context.system_properties["model_dir"]
        settings = (context.model_yaml_config or {}).get("handler", {})
        # One worker per pod/machine uses every core for intra-op parallelism;
        # more workers would each get a share (see model-config.yaml).
        torch.set_num_threads(int(settings.get("torch_threads", 1)))
        # Largest decoded image (model-config.yaml); Pillow's own decompression-bomb
        # guard (a process-wide setting) follows it.
        self.max_pixels = int(settings["max_image_pixels"])
        Image.MAX_IMAGE_PIXELS = self.max_pixels
        self.top_k = int(settings["top_k"])
        with open(os.path.join(model_dir, "index_to_name.json"), encoding="utf-8") as f:
            self.mapping = {int(k): v for k, v in json.load(f).items()}
        with open(os.path.join(model_dir, "weights.json"), encoding="utf-8") as f:
            self.weights = json.load(f)
        self.weights.setdefault("variant", "fp32")  # archives built before variants
        self.weights.setdefault("arch", "resnet18")  # archives built before ARCH
        self.model = load_model(
            os.path.join(model_dir, self.manifest["model"]["serializedFile"]),
            self.weights["variant"], self.weights["arch"],
        )
        self.model_info = {
            "model_name": self.manifest["model"]["modelName"],
            "model_version": self.manifest["model"].get("modelVersion", ""),
            "weights": {k: v for k, v in self.weights.items() if k in WEIGHTS_SHOWN},
        }
        if self.weights["source"] == "random":
            logger.warning(
                "MODEL %s %s SERVES RANDOM WEIGHTS (seed %s): predictions are meaningless",
                self.model_info["model_name"],
                self.model_info["model_version"],
                self.weights.get("seed"),
            )
        self.initialized = True

    def _start_spans(self, request_ids: list, parents: list) -> tuple | None:
        """(the batch's span, each request's span in its caller's trace, linked to it);
        None when not exporting."""
        if self.tracer is None:
            return None
        parents = [propagate.extract(p) for p in parents]
        incoming = [trace.get_current_span(p).get_span_context() for p in parents]
        batch = self.tracer.start_span(
            "batch", attributes={"batch.size": len(request_ids)},
            links=[trace.Link(c) for c in incoming if c.is_valid])
        link = [trace.Link(batch.get_span_context())]
        return batch, [self.tracer.start_span("request", context=parent, links=link,
                                              attributes={"request_id": request_id or ""})
                       for parent, request_id in zip(parents, request_ids)]

    def _stage(self, spans: tuple | None, name: str):
        """A span of the batch's (preprocess, inference, postprocess)."""
        if spans is None:
            return nullcontext()
        return self.tracer.start_as_current_span(name, context=trace.set_span_in_context(spans[0]))

    def preprocess(self, data):
        """-> {"size", "tensor" (good images stacked, or None), "good", "errors", "timing",
        "spans"}."""
        started = time.perf_counter()
        tensors, good, errors = [], [], {}
        # The gateway's X-Request-ID, so this log joins the gateway's.
        request_ids = [self.context.get_request_header(i, "X-Request-ID") for i in range(len(data))]
        # Each request's W3C trace context, as the gateway passed it on.
        parents = [{key: value for key in ("traceparent", "tracestate")
                    if (value := self.context.get_request_header(i, key))}
                   for i in range(len(data))]
        trace_ids = [(p.get("traceparent", "").split("-") + ["", ""])[1] or None
                     for p in parents]
        logger.info("batch of %d, request ids %s, trace ids %s", len(data), request_ids, trace_ids)
        spans = self._start_spans(request_ids, parents)
        # TorchServe's metrics port exports it as Batches{BatchSize="n"}: the dashboard's
        # batch sizes (config.properties: model_metrics_auto_detect).
        self.context.metrics.add_counter("Batches", 1,
                                         dimensions=[Dimension("BatchSize", str(len(data)))])
        with self._stage(spans, "preprocess"):
            for idx, row in enumerate(data):
                try:
                    tensors.append(transform(_payload(row), self.max_pixels))
                    good.append(idx)
                except ValueError as exc:
                    errors[idx] = str(exc)
                    if spans:
                        spans[1][idx].set_attribute("error", str(exc))
                    logger.info("request %s: %s", request_ids[idx], exc)
            tensor = torch.stack(tensors) if tensors else None
        timing = {"preprocess": time.perf_counter() - started}
        return {"size": len(data), "tensor": tensor, "good": good, "errors": errors,
                "timing": timing, "spans": spans}

    def inference(self, data, *args, **kwargs):
        if data["tensor"] is None:
            return data, None
        started = time.perf_counter()
        with self._stage(data["spans"], "inference"):
            probabilities = classify(self.model, data["tensor"])
        data["timing"]["inference"] = time.perf_counter() - started
        return data, probabilities

    def postprocess(self, data):
        started = time.perf_counter()
        batch, probabilities = data
        results = [None] * batch["size"]
        with self._stage(batch["spans"], "postprocess"):
            for idx, message in batch["errors"].items():
                self.context.set_response_status(422, message, idx)
                results[idx] = {"error": message, **self.model_info}
            if probabilities is not None:
                top_p, top_i = probabilities.topk(self.top_k, dim=1)
                for row, idx in enumerate(batch["good"]):
                    results[idx] = {
                        "predictions": [
                            {
                                "class_id": int(c),
                                "category_name": self.mapping[int(c)],
                                "probability": float(p),
                            }
                            for p, c in zip(top_p[row].tolist(), top_i[row].tolist())
                        ],
                        **self.model_info,
                    }
        batch["timing"]["postprocess"] = time.perf_counter() - started
        self._report_timing(batch)
        if batch["spans"]:
            batch_span, request_spans = batch["spans"]
            for span in request_spans:
                span.end()
            batch_span.end()
        return results

    def _report_timing(self, batch: dict) -> None:
        """The batch's stage times as each answer's Server-Timing header (W3C), which the
        gateway passes on: where a request's milliseconds went inside the worker."""
        value = ", ".join(f"{stage};dur={seconds * 1000:.2f}"
                          for stage, seconds in batch["timing"].items())
        for idx in range(batch["size"]):
            self.context.set_response_header(idx, "Server-Timing", value)

    def describe_handle(self):
        """Management API `GET /models/{name}?customized=true`: which weights run here."""
        return json.dumps(self.model_info)
