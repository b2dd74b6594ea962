"""Small rules the gateway relies on: version strings and their order, the handler's stage
times (gateway/models/versions.py, core/torchserve_client.py)."""

import pytest

from core.errors import ApiError
from core.torchserve_client import stage_seconds
from gateway.models.versions import check_version, version_key


def test_versions_sort_by_their_numbers():
    versions = ["1.10", "1.9", "2.0", "1.0-int8", "1.0", "10.0", "1.2.3"]
    assert sorted(versions, key=version_key) == ["1.0", "1.0-int8", "1.2.3", "1.9", "1.10",
                                                 "2.0", "10.0"]


@pytest.mark.parametrize("version", ["1.0", "2.0-int8", "v3_b", "a" * 32])
def test_good_version_strings(version):
    assert check_version(version) == version


@pytest.mark.parametrize("version", ["", "..", "1..0", "../etc", "a" * 33, "-1", "1 0", "1/0"])
def test_bad_version_strings_are_422(version):
    with pytest.raises(ApiError) as caught:
        check_version(version)
    assert caught.value.status == 422


def test_stage_seconds_from_server_timing():
    assert stage_seconds("preprocess;dur=3.5, inference;dur=22.1,postprocess;dur=0.07") == \
        pytest.approx({"preprocess": 0.0035, "inference": 0.0221, "postprocess": 0.00007})


def test_malformed_stage_entries_are_skipped():
    assert stage_seconds("") == {}
    assert stage_seconds("inference;dur=x, fine;dur=1, nodur") == {"fine": 0.001}
