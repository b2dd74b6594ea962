"""Reading the upload: every parser limit and what a form that is not ours gets, without a
server (gateway/predictions/uploads.py)."""

import io

import pytest

from core.errors import ApiError
from gateway.predictions.uploads import (MAX_PART_HEADER_BYTES, MAX_PART_HEADERS, MAX_PARTS,
                                         MULTIPART_OVERHEAD, read_form, safe_filename)

BOUNDARY = "b0undary"
MAX_BYTES = 1000


def part(name: str, data: bytes = b"x", filename: str | None = None,
         headers: tuple[str, ...] = ()) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    lines = [f"--{BOUNDARY}", f"Content-Disposition: {disposition}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def read(body: bytes, content_length: int | None = -1, max_bytes: int = MAX_BYTES,
         content_type: str = f"multipart/form-data; boundary={BOUNDARY}"):
    length = len(body) if content_length == -1 else content_length
    [upload] = read_form(io.BytesIO(body), content_type, length, max_bytes).uploads
    return upload


def refused(body: bytes, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        read(body, **kwargs)
    return caught.value


def test_the_file_part_and_its_cleaned_name():
    upload = read(form(part("note", b"hi"), part("file", b"\x89PNG", "../../a/Cat.PNG")))
    assert (upload.filename, upload.extension, upload.data) == ("Cat.PNG", "png", b"\x89PNG")


def test_other_fields_next_to_the_file_are_ignored_up_to_the_part_limit():
    fields = [part(f"field{i}") for i in range(MAX_PARTS - 1)]
    assert read(form(*fields, part("file", b"img", "a.jpg"))).data == b"img"


def test_more_parts_than_the_limit_is_422_not_413():
    # The Schemathesis case of issue #24: a dozen-plus odd fields and no file.
    error = refused(form(*[part(f"\u00e9\u00df{i}") for i in range(MAX_PARTS + 1)]))
    assert error.status == 422
    assert error.detail.startswith("multipart form is not this endpoint's: Maximum segment "
                                   "count exceeded")


def test_a_part_header_over_its_limit_is_422():
    long_header = "X-Padding: " + "p" * MAX_PART_HEADER_BYTES
    error = refused(form(part("file", b"img", "a.jpg", headers=(long_header,))))
    assert error.status == 422 and "Maximum segment header length exceeded" in error.detail


def test_more_part_headers_than_the_limit_is_422():
    headers = tuple(f"X-H{i}: v" for i in range(MAX_PART_HEADERS))
    error = refused(form(part("file", b"img", "a.jpg", headers=headers)))
    assert error.status == 422 and "Maximum segment header count exceeded" in error.detail


def test_a_declared_length_over_the_limit_is_413_before_reading():
    error = refused(b"", content_length=MAX_BYTES + MULTIPART_OVERHEAD + 1)
    assert (error.status, error.detail) == (413, f"file is larger than {MAX_BYTES} bytes")


def test_an_undeclared_length_over_the_limit_is_413_while_reading():
    body = form(part("file", b"x" * (MAX_BYTES + MULTIPART_OVERHEAD + 1), "a.jpg"))
    error = refused(body, content_length=None)
    assert (error.status, error.detail) == (413, f"file is larger than {MAX_BYTES} bytes")


@pytest.mark.parametrize("body,content_type,detail", [
    (b"", None, "multipart body could not be parsed: Unexpected end of multipart stream "
                "(parser closed)"),
    (b"file=abc", "application/x-www-form-urlencoded", "multipart form field 'file' is required"),
    (form(part("image", b"img", "a.jpg")), None, "multipart form field 'file' is required"),
    (form(part("file", b"1", "a.jpg"), part("file", b"2", "b.jpg")), None,
     "send exactly one 'file' field"),
    (b"", "multipart/form-data", "multipart body has no boundary"),
    (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end", None,
     "multipart body could not be parsed: Unexpected end of multipart stream (parser closed)"),
], ids=["empty", "urlencoded", "no_file_part", "two_files", "no_boundary", "truncated"])
def test_forms_that_are_not_ours_are_422(body, content_type, detail):
    kwargs = {"content_type": content_type} if content_type else {}
    error = refused(body, **kwargs)
    assert (error.status, error.detail) == (422, detail)


@pytest.mark.parametrize("raw,expected", [
    ("../../etc/passwd.png", "passwd.png"),
    ("..\\..\\windows\\evil.png", "evil.png"),
    ("nul\x00byte.png", "nulbyte.png"),
    ("a" * 5000 + ".png", "a" * 255),
    ("猫.png", "猫.png"),
    (None, ""),
])
def test_safe_filename(raw, expected):
    assert safe_filename(raw) == expected
