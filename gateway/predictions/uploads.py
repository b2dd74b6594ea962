"""An uploaded image: reading the one `file` part of a multipart form, and its name;
or, for TorchServe's inference API, a raw body or a form's one part, whatever its name.

Plain Python over the WSGI input stream (no Flask), parsed with the `multipart`
package rather than werkzeug's parser, which compiles a new regex for every
request's random boundary (bench/HISTORY.md, "What each change did").

What a form that is not ours gets: 413 is only about bytes (the body, or the file,
over MAX_UPLOAD_BYTES); a form whose shape cannot be /predict's (no `file`, two of
them, more than MAX_PARTS parts, a part header over MAX_PART_HEADER_BYTES or more
than MAX_PART_HEADERS of them, a body that does not parse) is 422. Other fields next
to the one `file` are ignored.
"""

from dataclasses import dataclass
from typing import BinaryIO

import multipart

from core.errors import ApiError, too_large

MAX_FILENAME_CHARS = 255
# Multipart framing around the file, on top of MAX_UPLOAD_BYTES.
MULTIPART_OVERHEAD = 64 * 1024
MAX_PARTS = 16
MAX_PART_HEADER_BYTES = 16 * 1024
MAX_PART_HEADERS = 8
# The parser's messages for its limits on a form's shape; its other limits are on bytes.
_SHAPE_LIMITS = ("Maximum segment count exceeded", "Maximum segment header length exceeded",
                 "Maximum segment header count exceeded")


def safe_filename(raw: str | None) -> str:
    """The base name only, without control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:MAX_FILENAME_CHARS]


def extension_of(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


@dataclass(frozen=True)
class Upload:
    """One image as it was sent: its cleaned file name and its bytes."""

    filename: str
    data: bytes

    @property
    def extension(self) -> str:
        return extension_of(self.filename)


@dataclass(frozen=True)
class Form:
    """POST /predict's form, as the prediction pipeline reads it: its one image."""

    uploads: tuple[Upload]


def read_form(stream: BinaryIO, content_type: str | None, content_length: int | None,
              max_bytes: int, field: str | None = "file") -> Form:
    """The one multipart part named `field` (None: the form's one part), or ApiError
    413/422."""
    limit = max_bytes + MULTIPART_OVERHEAD
    if (content_length or 0) > limit:
        raise too_large(max_bytes)
    mimetype, options = multipart.parse_options_header(content_type or "")
    parts = []
    if mimetype == "multipart/form-data":
        if not options.get("boundary"):
            raise ApiError(422, "multipart body has no boundary")
        parser = multipart.MultipartParser(
            stream, options["boundary"], content_length or -1, part_limit=MAX_PARTS,
            header_limit=MAX_PART_HEADERS, headersize_limit=MAX_PART_HEADER_BYTES,
            memory_limit=limit, disk_limit=limit, spool_limit=limit)
        try:
            parts = [part for part in parser if field is None or part.name == field]
        except multipart.ParserLimitReached as exc:
            reason = exc.args[0]
            if reason in _SHAPE_LIMITS:
                raise ApiError(422, f"multipart form is not this endpoint's: {reason} (at most "
                                    f"{MAX_PARTS} parts, {MAX_PART_HEADERS} headers of "
                                    f"{MAX_PART_HEADER_BYTES} bytes each)") from None
            raise too_large(max_bytes) from None
        except multipart.MultipartError as exc:
            reason = exc.args[0] if exc.args else exc
            raise ApiError(422, f"multipart body could not be parsed: {reason}") from None
    if not parts:
        raise ApiError(422, f"multipart form field '{field}' is required" if field
                       else "multipart form has no part")
    if len(parts) > 1:
        raise ApiError(422, f"send exactly one '{field}' field" if field
                       else "send exactly one part")
    return Form((Upload(safe_filename(parts[0].filename), parts[0].raw),))


def read_body(stream: BinaryIO, content_type: str | None, content_length: int | None,
              max_bytes: int) -> Form:
    """TorchServe's inference input: a multipart form's one part, or the raw body
    (`curl -T image.jpg`), at most max_bytes; ApiError 413/422."""
    if (content_type or "").startswith("multipart/"):
        return read_form(stream, content_type, content_length, max_bytes, field=None)
    if (content_length or 0) > max_bytes:
        raise too_large(max_bytes)
    data = stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    if not data:
        raise ApiError(422, "send the input as the request body")
    return Form((Upload("", data),))
