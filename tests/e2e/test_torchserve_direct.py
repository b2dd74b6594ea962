"""Real TorchServe from a real .mar: predictions, bad input, security settings."""

import pytest
import requests

from devstack import images

pytestmark = pytest.mark.e2e

IMAGES = {"jpeg": images.jpeg, "png": images.png, "grey": images.grey_png,
          "rgba": images.rgba_png, "cmyk": images.cmyk_jpeg}


@pytest.mark.parametrize("make", IMAGES.values(), ids=IMAGES.keys())
def test_real_images_get_five_predictions(torchserve, make):
    response = requests.post(torchserve.url + "/predictions/classifier", data=make(), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 5
    assert all(set(p) == {"class_id", "category_name", "probability"} for p in body["predictions"])
    assert body["model_name"] == "classifier" and body["model_version"] == "1.0"
    assert body["weights"]["source"] == "random"


def test_multipart_upload_works_too(torchserve):
    response = requests.post(torchserve.url + "/predictions/classifier",
                             files={"data": ("a.jpg", images.jpeg())}, timeout=30)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 5


def test_non_image_gets_a_clean_error_and_the_worker_lives(torchserve):
    bad = requests.post(torchserve.url + "/predictions/classifier", data=b"plain text", timeout=30)
    assert bad.status_code == 422
    assert "error" in bad.json()
    good = requests.post(torchserve.url + "/predictions/classifier", data=images.png(), timeout=30)
    assert good.status_code == 200


def test_management_api_refuses_urls_and_paths(torchserve):
    for url in ("https://example.com/evil.mar", "http://127.0.0.1:9/x.mar",
                "file:///etc/passwd", "../classifier-1.0.mar"):
        response = requests.post(torchserve.management_url + "/models",
                                 params={"url": url}, timeout=30)
        assert response.status_code in (400, 404), (url, response.text)


def test_metrics_endpoint_speaks_prometheus(torchserve):
    response = requests.get(torchserve.metrics_url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert "# TYPE" in response.text
