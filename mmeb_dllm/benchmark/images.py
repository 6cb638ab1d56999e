"""Opening benchmark images safely: one place that decodes, converts and names the file when it cannot.

Handling (documented in docs/robustness.md):
- corrupt, zero-byte or truncated files -> :class:`DataError` naming the file (and the row, via ``where``);
- more than ``$MMEB_DLLM_MAX_IMAGE_PIXELS`` pixels (default 64 M) -> :class:`DataError` before decoding (bombs);
- EXIF orientation applied (upright), animated images -> first frame;
- modes: RGB kept; L/LA/P/PA/RGBA/CMYK/YCbCr/1 -> ``convert("RGB")`` (alpha dropped, like the MMEB reference code);
  16/32-bit greyscale (I;16*, I, F) -> rescaled by the type's range to 8 bits, then RGB.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mmeb_dllm.errors import DataError

DEFAULT_MAX_PIXELS = 64_000_000


def max_pixels() -> int:
    return int(os.environ.get("MMEB_DLLM_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in {"I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        scaled = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    return image.convert("RGB")


def open_image(path: str | Path, *, where: str = "") -> Image.Image:
    """Decode ``path`` fully into an upright RGB image, or raise :class:`DataError` naming it."""
    path = Path(path)
    prefix = f"{where}: " if where else ""
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{prefix}image file {path} is empty (0 bytes); re-extract or re-download it")
        limit = max_pixels()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as handle:
                width, height = handle.size
                if width * height > limit:
                    raise DataError(
                        f"{prefix}image file {path} is {width}x{height} = {width * height} pixels, over the limit of "
                        f"{limit} (a decompression bomb?); raise MMEB_DLLM_MAX_IMAGE_PIXELS if it is genuine"
                    )
                handle.seek(0)
                handle.load()
                image = ImageOps.exif_transpose(handle)
                return _to_rgb(image).copy()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{prefix}image file {path} is missing") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{prefix}image file {path} is too large to decode safely ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{prefix}image file {path} cannot be decoded ({type(exc).__name__}: {exc})") from None
