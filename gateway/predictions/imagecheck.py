"""Reject bad uploads before they reach TorchServe (Pillow only, no torch).

Only what the image header tells is checked here: size, format, pixel count
(the decompression-bomb guard, whatever Pillow's own threshold: the app factory turns
that one off). Whether the pixel data itself is intact is found by the handler, which
decodes every image anyway and answers 422 for that one image; decoding it here too
would cost gateway CPU on every request (bench/HISTORY.md, "Round one's last table").
"""

import io

from PIL import Image, UnidentifiedImageError

from core.errors import ApiError, too_large

ACCEPTED_FORMATS = {"JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"}
ACCEPTED = ", ".join(sorted(ACCEPTED_FORMATS))


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> None:
    """Raise ApiError 413 / 415 / 422 for what the header alone shows is not acceptable."""
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    if not data:
        raise ApiError(422, "file is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ApiError(415, f"file is not an image in an accepted format ({ACCEPTED})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(422, f"image header is corrupt: {exc}") from None
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise ApiError(415, f"image format {image.format} is not accepted ({ACCEPTED})")
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(422, f"image has {width * height} pixels, the limit is {max_pixels}")
