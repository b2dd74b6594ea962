"""Seeded synthetic photos-to-be: calibration and agreement sets for model variants.

No image data set can be downloaded here, so the int8 variant is calibrated and
checked on generated pictures: overlapping coloured shapes on gradients with
noise, in the sizes and formats users upload. Encoded bytes, so they go through
the handler's own decode path. The same seed always gives the same set.
"""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SIZES = [(640, 480), (480, 640), (1024, 768), (320, 240), (500, 500), (800, 600)]


def _picture(rng: np.random.Generator) -> Image.Image:
    width, height = SIZES[rng.integers(len(SIZES))]
    # Background: a two-colour gradient in a random direction.
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    ramp = (a[None, :] * (1 - t[:, None]) + b[None, :] * t[:, None]).astype(np.uint8)
    pixels = (np.broadcast_to(ramp[None, :, :], (height, width, 3)) if len(t) == width
              else np.broadcast_to(ramp[:, None, :], (height, width, 3)))
    img = Image.fromarray(np.ascontiguousarray(pixels))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 12)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(10, width // 2), y0 + rng.integers(10, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(3)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 20)))
    noise = rng.normal(0, rng.uniform(2, 25), (height, width, 3))
    noisy = np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255)
    img = Image.fromarray(noisy.astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))


def synthetic_images(count: int, seed: int) -> list[bytes]:
    """`count` encoded images (JPEG mostly, some PNG), the same for the same seed."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        if rng.random() < 0.8:
            _picture(rng).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
        else:
            _picture(rng).save(buf, "PNG")
        out.append(buf.getvalue())
    return out
