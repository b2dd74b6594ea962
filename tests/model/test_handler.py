"""ResNetHandler called directly: every upload mode, batches with bad images."""

import json

import pytest

from devstack import images
from handler import resnet_handler as mod
from modelbuild import archive, weights
from modelbuild.handler_files import MAX_IMAGE_PIXELS
from tests.support.handler_harness import load_handler, run


@pytest.fixture(scope="module")
def handler(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("model")
    archive.write_model_files(weights.random_weights(0), model_dir)
    return load_handler(model_dir)


GOOD = {
    "rgb_jpeg": images.jpeg, "rgb_png": images.png, "grey_L": images.grey_png,
    "LA": images.la_png, "palette_P": images.palette_png, "RGBA": images.rgba_png,
    "CMYK_jpeg": images.cmyk_jpeg, "png_16bit": images.png16,
    "exif_rotated": images.exif_rotated_jpeg, "one_pixel": images.tiny,
    "animated_gif": images.gif_animated,
}


@pytest.mark.parametrize("make", GOOD.values(), ids=GOOD.keys())
def test_every_upload_mode_gets_five_predictions(handler, make):
    [result] = run(handler, [{"data": bytearray(make())}])
    assert "error" not in result
    preds = result["predictions"]
    assert len(preds) == 5
    assert all(0.0 <= p["probability"] <= 1.0 for p in preds)
    assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
    assert all(handler.mapping[p["class_id"]] == p["category_name"] for p in preds)
    assert result["model_name"] == "classifier" and result["model_version"] == "1.0"
    assert result["weights"]["source"] == "random"


def test_preprocess_gives_imagenet_shape(handler):
    batch = handler.preprocess([{"body": images.jpeg((800, 600))}, {"data": images.grey_png()}])
    assert tuple(batch["tensor"].shape) == (2, 3, 224, 224)


def test_exif_orientation_is_applied():
    upright = mod.decode_image(images.exif_rotated_jpeg(6), MAX_IMAGE_PIXELS)
    assert upright.size == (160, 320)  # stored 320x160, EXIF says rotate 90 degrees


def test_16bit_png_is_scaled_not_clipped():
    img = mod.decode_image(images.png16(), MAX_IMAGE_PIXELS)
    lo, hi = img.convert("L").getextrema()
    assert hi < 255 or lo < 250, "a plain convert would clip every pixel to white"
    assert hi - lo > 100


def test_rgba_is_composited_on_white():
    from PIL import Image

    source = Image.new("RGBA", (4, 1), (0, 0, 0, 0))  # transparent black ...
    source.putpixel((1, 0), (0, 0, 0, 255))  # ... one opaque black pixel ...
    source.putpixel((2, 0), (0, 0, 0, 128))  # ... one half-transparent black pixel
    img = mod.decode_image(images.encode(source, "PNG"), MAX_IMAGE_PIXELS)
    assert img.mode == "RGB"
    assert [img.getpixel((x, 0)) for x in range(4)] == [
        (255, 255, 255), (0, 0, 0), (127, 127, 127), (255, 255, 255)]


@pytest.mark.parametrize("data,detail", [
    (images.truncated_jpeg(), "image data is corrupt: image file is truncated"),
    (images.png_bad_crc(), "image data is corrupt: broken PNG file"),
    (b"not an image", "not an image"),
    (images.bomb_png(9000, 5000), "image has 45000000 pixels"),
], ids=["truncated_jpeg", "png_bad_crc", "text", "too_many_pixels"])
def test_bad_image_data_is_a_clear_value_error(data, detail):
    with pytest.raises(ValueError, match=detail):
        mod.decode_image(data, MAX_IMAGE_PIXELS)


def test_bad_image_in_batch_does_not_fail_the_others(handler):
    rows = [{"data": images.jpeg()}, {"data": b"not an image"}, {"data": images.png()},
            {"data": images.truncated_jpeg()}]
    results = run(handler, rows)
    assert "predictions" in results[0] and "predictions" in results[2]
    assert "error" in results[1] and "error" in results[3]
    assert set(handler.context.statuses) == {1, 3}
    assert all(code == 422 for code, _ in handler.context.statuses.values())
    # The good images give the same answer alone as in a mixed batch.
    [alone] = run(handler, [{"data": images.jpeg()}])
    assert alone["predictions"][0]["class_id"] == results[0]["predictions"][0]["class_id"]


def test_batch_of_only_bad_images(handler):
    results = run(handler, [{"data": b""}, {"data": None}, {"data": "text"}])
    assert [("error" in r) for r in results] == [True, True, True]
    # No forward pass ran: the timing says so rather than inventing one.
    assert set(handler.context.headers) == {0, 1, 2}
    assert "inference" not in handler.context.headers[0]["Server-Timing"]


def test_every_answer_carries_the_batch_stage_times(handler):
    run(handler, [{"data": images.jpeg((800, 600))}, {"data": b"bad"}])
    values = {idx: headers["Server-Timing"] for idx, headers in handler.context.headers.items()}
    assert set(values) == {0, 1} and values[0] == values[1]
    stages = dict(entry.split(";dur=") for entry in values[0].split(", "))
    assert list(stages) == ["preprocess", "inference", "postprocess"]
    # An 800x600 JPEG's decode and resize and a ResNet-18 forward pass each take time.
    assert float(stages["preprocess"]) > 0.5 and float(stages["inference"]) > 1


def test_pixel_cap_rejects_bombs():
    with pytest.raises(ValueError, match="pixels"):
        mod.decode_image(images.bomb_png(), MAX_IMAGE_PIXELS)


def test_pixel_cap_comes_from_the_model_config(handler):
    assert handler.max_pixels == MAX_IMAGE_PIXELS == 40_000_000
    with pytest.raises(ValueError, match="image has 307200 pixels, the limit is 1000"):
        mod.decode_image(images.jpeg((640, 480)), 1000)


def test_labels_are_the_1000_imagenet_classes(handler):
    assert len(handler.mapping) == 1000
    assert set(handler.mapping) == set(range(1000))
    assert handler.mapping[0] == "tench"


def test_thread_count_follows_model_config(handler):
    import torch

    assert torch.get_num_threads() == handler.context.model_yaml_config["handler"]["torch_threads"]


def test_describe_handle_reports_the_weights_record(handler):
    described = json.loads(handler.describe_handle())
    assert described["model_name"] == "classifier" and described["model_version"] == "1.0"
    assert described["weights"]["source"] == "random"
    assert described["weights"]["sha256"] == weights.random_weights(0).sha256


def test_one_handler_serves_another_resnet(tmp_path):
    """ARCH: the architecture is recorded in weights.json, loaded by the same handler and
    shown in every answer's weights info."""
    resnet34 = weights.random_weights(0, "resnet34")
    record = archive.write_model_files(resnet34, tmp_path)
    assert record["arch"] == "resnet34"
    handler = load_handler(tmp_path, "2.0")
    assert type(handler.model).__name__ == "ResNet" and len(handler.model.layer1) == 3  # 34: 3
    [result] = run(handler, [{"data": images.jpeg()}])
    assert len(result["predictions"]) == 5 and result["weights"]["arch"] == "resnet34"
    with pytest.raises(weights.WeightsError, match="not one of"):
        weights.random_weights(0, "vgg16")
