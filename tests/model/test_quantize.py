"""The int8 variant: its agreement gate, and the handler serving an int8 archive."""

import json

import pytest

from devstack import images
from handler import resnet_handler as mod
from modelbuild import archive, quantize, synthetic, weights
from modelbuild.handler_files import MAX_IMAGE_PIXELS
from tests.support.handler_harness import load_handler, run


@pytest.fixture
def small_sets(monkeypatch):
    """Fewer images than the real gate uses (64 + 200), to keep the unit tests quick."""
    monkeypatch.setattr(quantize, "CALIBRATION", {"count": 8, "seed": 1})
    monkeypatch.setattr(quantize, "AGREEMENT", {"count": 24, "seed": 2})


def test_synthetic_sets_are_fixed_and_decodable():
    first, again = synthetic.synthetic_images(5, seed=3), synthetic.synthetic_images(5, seed=3)
    assert first == again
    assert first != synthetic.synthetic_images(5, seed=4)
    assert all(mod.decode_image(data, MAX_IMAGE_PIXELS).mode == "RGB" for data in first)


def test_gate_refuses_a_variant_below_the_agreement_floor(small_sets, tmp_path):
    with pytest.raises(quantize.VariantRejected, match="below 101%: not built"):
        archive.write_model_files(weights.random_weights(0), tmp_path, "int8",
                                  min_agreement=1.01)  # no model can reach it
    assert not (tmp_path / "weights.json").exists()


def test_int8_archive_files_are_served_by_the_handler(small_sets, tmp_path):
    # Random weights do not reach 99 % (bench/HISTORY.md, "Round two", int8 variant); the floor is lowered here
    # only to prove that an int8 model directory loads and classifies.
    record = archive.write_model_files(weights.random_weights(0), tmp_path, "int8",
                                       min_agreement=0.0)
    assert record["variant"] == "int8" and record["agreement_images"] == 24
    assert 0.0 <= record["top1_agreement"] <= 1.0
    assert record["passes_gate"] == (record["top1_agreement"] >= quantize.MIN_AGREEMENT)
    assert json.loads((tmp_path / "weights.json").read_text()) == record
    handler = load_handler(tmp_path, "1.0-int8")
    good, bad = run(handler, [{"data": images.jpeg()}, {"data": b"nope"}])
    assert len(good["predictions"]) == 5 and "error" in bad
    assert good["weights"]["variant"] == "int8"
    assert good["weights"]["top1_agreement"] == record["top1_agreement"]
