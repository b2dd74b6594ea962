"""Property-based fuzzing of /token and /predict against the real gateway (bounded)."""

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack import images

pytestmark = pytest.mark.e2e
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SEEDS = [images.jpeg(), images.png(), images.gif_animated(), images.tiny()]


def assert_clean(response, allowed):
    assert response.status_code in allowed, (response.status_code, response.text)
    body = response.json()
    if response.status_code != 200:
        assert set(body) in ({"detail"}, {"detail", "error", "error_description"})
        assert isinstance(body["detail"], str)


form_values = st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")))


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(["username", "password", "grant_type", "scope",
                                               "client_id", "client_secret", "junk"]),
                              form_values, max_size=6))
def test_fuzz_token(gateway, fields):
    response = requests.post(gateway.url + "/token", data=fields, timeout=30)
    assert_clean(response, {200, 400, 401, 422, 429})  # 400: an unknown scope


@FUZZ
@given(body=st.binary(max_size=2048), content_type=st.sampled_from(
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json",
     "text/plain", "multipart/form-data"]))
def test_fuzz_token_raw_bodies(gateway, body, content_type):
    response = requests.post(gateway.url + "/token", data=body, timeout=30,
                             headers={"Content-Type": content_type})
    assert_clean(response, {401, 422, 429})


@FUZZ
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                    max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)),
       filename=st.text(max_size=300), version=st.one_of(st.none(), st.text(max_size=40)))
def test_fuzz_predict(gateway, user_token, seed, flips, cut, filename, version):
    data = bytearray(seed)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    params = {"model_version": version} if version is not None else {}
    response = requests.post(gateway.url + "/predict", params=params, timeout=60,
                             headers={"Authorization": f"Bearer {user_token}"},
                             files={"file": (filename, bytes(data))})
    assert_clean(response, {200, 404, 413, 415, 422})
