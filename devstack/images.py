"""Synthesised test images, encoded the way real uploads arrive."""

import io
import struct
import zlib

from PIL import Image


def _gradient(mode: str = "RGB", size=(320, 240)) -> Image.Image:
    img = Image.new("RGB", size)
    img.putdata([((x * 255) // size[0], (y * 255) // size[1], 128)
                 for y in range(size[1]) for x in range(size[0])])
    return img.convert(mode)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def jpeg(size=(320, 240)) -> bytes:
    return encode(_gradient("RGB", size), "JPEG", quality=90)


def png() -> bytes:
    return encode(_gradient("RGB"), "PNG")


def grey_png() -> bytes:
    return encode(_gradient("L"), "PNG")


def la_png() -> bytes:
    return encode(_gradient("LA"), "PNG")


def rgba_png() -> bytes:
    img = _gradient("RGBA")
    img.putalpha(128)
    return encode(img, "PNG")


def palette_png(transparent: bool = True) -> bytes:
    img = _gradient("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    return encode(img, "PNG", **({"transparency": 0} if transparent else {}))


def cmyk_jpeg() -> bytes:
    return encode(_gradient("CMYK"), "JPEG")


def png16() -> bytes:
    """A 16-bit greyscale PNG whose values use the whole 0..65535 range."""
    img = Image.new("I;16", (64, 48))
    img.putdata([(x * 1000) % 65536 for x in range(64 * 48)])
    return encode(img, "PNG")


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(_gradient("RGB", (320, 160)), "JPEG", exif=exif)


def gif_animated() -> bytes:
    frames = [_gradient("RGB").convert("P"), Image.new("P", (320, 240), 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg((640, 480))
    return data[: len(data) // 2]


def png_bad_crc() -> bytes:
    data = bytearray(png())
    # First IDAT chunk: flip a byte of its stored CRC.
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4 + length] ^= 0xFF
    return bytes(data)


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG that claims huge dimensions (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def tiny() -> bytes:
    return encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG")
