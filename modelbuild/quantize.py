"""The int8 model variant: post-training static quantisation, kept only if it agrees.

FX graph mode quantisation with the x86 backend's default settings (weights int8
per channel, activations int8 with histogram-calibrated ranges), calibrated on
synthetic images and saved as TorchScript, which the handler loads as it is.
An int8 model is only built if its top-1 class matches the fp32 model's on at
least 99 % of a fixed set of 200 other synthetic images.
"""

import copy

import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

from handler.resnet_handler import classify
from modelbuild import synthetic
from modelbuild.handler_files import transform_batch

MIN_AGREEMENT = 0.99
CALIBRATION = {"count": 64, "seed": 1}
AGREEMENT = {"count": 200, "seed": 2}


class VariantRejected(RuntimeError):
    """The quantised model disagrees with fp32 too often to be served."""


def batches(payloads: list[bytes], size: int = 16):
    for start in range(0, len(payloads), size):
        yield transform_batch(payloads[start:start + size])


def quantize_int8(model: torch.nn.Module, calibration: list[bytes]) -> torch.jit.ScriptModule:
    example = next(batches(calibration[:1]))
    prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"),
                          (example,))
    with torch.inference_mode():
        for batch in batches(calibration):
            prepared(batch)
    quantized = convert_fx(prepared)
    with torch.no_grad():
        return torch.jit.freeze(torch.jit.trace(quantized, example))


def top1_agreement(reference, candidate, payloads: list[bytes]) -> dict:
    """Share of images whose top-1 class is the same, and how many classes they span."""
    same, classes = 0, set()
    for batch in batches(payloads):
        expected = classify(reference, batch).argmax(dim=1)
        same += int((classify(candidate, batch).argmax(dim=1) == expected).sum())
        classes.update(expected.tolist())
    return {"top1_agreement": round(same / len(payloads), 4), "agreement_images": len(payloads),
            "agreement_classes": len(classes)}


def int8_variant(model: torch.nn.Module,
                 min_agreement: float | None = None) -> tuple[torch.jit.ScriptModule, dict]:
    """The quantised model and its agreement report, or VariantRejected.

    `min_agreement` defaults to MIN_AGREEMENT; only the bench lowers it, to measure
    the speed of a variant that random weights keep from passing.
    """
    floor = MIN_AGREEMENT if min_agreement is None else min_agreement
    quantized = quantize_int8(model, synthetic.synthetic_images(**CALIBRATION))
    report = top1_agreement(model, quantized, synthetic.synthetic_images(**AGREEMENT))
    report["passes_gate"] = report["top1_agreement"] >= MIN_AGREEMENT
    if report["top1_agreement"] < floor:
        raise VariantRejected(
            f"int8 top-1 agreement with fp32 is {report['top1_agreement']:.2%} on "
            f"{report['agreement_images']} images, below {floor:.0%}: not built")
    return quantized, report
