"""LaViDa's image path outside the networks: anyres tiling, pixel normalisation, 2-D pooling, unpadding, merging.

Sizes follow upstream conventions: image sizes and pinpoints are ``(width, height)``; tensors are ``(H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmeb_dllm.errors import ConfigError

Size = tuple[int, int]
POOL_MODES = ("bilinear", "average", "max")


def parse_pinpoints(value: Any) -> list[Size]:
    """``image_grid_pinpoints`` of config.json (a list of ``[width, height]``) as a list of tuples."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(
            f"config.json 'image_grid_pinpoints' must be a non-empty list of [width, height] pairs, found {value!r}"
        )
    pinpoints: list[Size] = []
    for pair in value:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, int) and v > 0 for v in pair)):
            raise ConfigError(f"config.json 'image_grid_pinpoints' entry {pair!r} is not a [width, height] pair")
        pinpoints.append((pair[0], pair[1]))
    return pinpoints


def select_best_resolution(image_size: Size, pinpoints: Sequence[Size]) -> Size:
    """The pinpoint ``(W, H)`` that keeps the most of the image's resolution, ties broken by least wasted area."""
    width, height = image_size
    best, best_effective, best_wasted = pinpoints[0], -1, math.inf
    for target_w, target_h in pinpoints:
        scale = min(target_w / width, target_h / height)
        scaled_w, scaled_h = int(width * scale), int(height * scale)
        effective = min(scaled_w * scaled_h, width * height)
        wasted = target_w * target_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (target_w, target_h), effective, wasted
    return best


def resize_and_pad(image: Image.Image, target: Size) -> Image.Image:
    """Scale ``image`` to fit ``target`` ``(W, H)`` keeping its aspect ratio, centred on a black canvas."""
    width, height = image.size
    target_w, target_h = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h)), ((target_w - new_w) // 2, (target_h - new_h) // 2))
    return canvas


def split_tiles(image: Image.Image, tile: int) -> list[Image.Image]:
    """Square ``tile``-pixel crops in row-major order (top row left to right first)."""
    width, height = image.size
    return [image.crop((x, y, x + tile, y + tile)) for y in range(0, height, tile) for x in range(0, width, tile)]


def anyres_views(image: Image.Image, pinpoints: Sequence[Size], tile: int) -> list[Image.Image]:
    """The base view (whole image squashed to ``tile``²) first, then the tiles of the padded best-fit canvas."""
    canvas = resize_and_pad(image, select_best_resolution(image.size, pinpoints))
    return [image.resize((tile, tile)), *split_tiles(canvas, tile)]


def normalize_view(view: Image.Image, tile: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(3, tile, tile)`` float32 pixels: rescale by 1/255 (in float64, like upstream), then ``(x - mean) / std``."""
    if view.size != (tile, tile):
        view = view.resize((tile, tile), Image.Resampling.BICUBIC)
    pixels = (np.asarray(view, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    pixels = (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return pixels.transpose(2, 0, 1)


def preprocess_anyres(
    image: Image.Image, pinpoints: Sequence[Size], tile: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """``(1 + tiles, 3, tile, tile)`` float32 pixel values of one image, base view first."""
    views = anyres_views(image.convert("RGB"), pinpoints, tile)
    return torch.from_numpy(np.stack([normalize_view(view, tile, mean, std) for view in views]))


def grid_shape(image_size: Size, pinpoints: Sequence[Size], tile: int) -> Size:
    """Number of tiles ``(columns, rows)`` of the anyres grid for an image of ``(W, H)``."""
    width, height = select_best_resolution(image_size, pinpoints)
    return width // tile, height // tile


def pooled_side(side: int, mode: str, stride: int = 2) -> int:
    """Side of a pooled ``side``² patch grid: bilinear rounds up, average/max pooling rounds down."""
    return math.ceil(side / stride) if mode == "bilinear" else side // stride


def pool_2d(features: torch.Tensor, mode: str = "bilinear", stride: int = 2) -> torch.Tensor:
    """Pool ``(N, side², D)`` tile features on their square patch grid to ``(N, pooled_side², D)``."""
    count, tokens, dim = features.shape
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ValueError(f"pooling needs a square patch grid, got {tokens} tokens per tile")
    grid = features.view(count, side, side, dim).permute(0, 3, 1, 2)
    if mode == "bilinear":
        new_side = pooled_side(side, mode, stride)
        grid = F.interpolate(grid, size=(new_side, new_side), mode="bilinear", align_corners=False)
    elif mode == "average":
        grid = F.avg_pool2d(grid, stride)
    elif mode == "max":
        grid = F.max_pool2d(grid, stride)
    else:
        raise ConfigError(f"config.json 'mm_spatial_pool_mode' = {mode!r} is not supported; use one of {POOL_MODES}")
    return grid.permute(0, 2, 3, 1).reshape(count, -1, dim)


def unpad_slices(current: Size, image_size: Size) -> tuple[slice, slice]:
    """Rows and columns of a ``current`` ``(H, W)`` feature grid that cover the image, not the padding.

    Upstream rounds the new size down with ``int()`` and keeps ``[pad : current - pad]``, so an odd remainder keeps
    one row/column more than the computed size.
    """
    current_h, current_w = current
    width, height = image_size
    if width / height > current_w / current_h:
        new_h = int(height * (current_w / width))
        pad = (current_h - new_h) // 2
        return slice(pad, current_h - pad), slice(0, current_w)
    new_w = int(width * (current_h / height))
    pad = (current_w - new_w) // 2
    return slice(0, current_h), slice(pad, current_w - pad)


def merge_anyres(pooled: torch.Tensor, image_size: Size, grid: Size, newline: torch.Tensor) -> torch.Tensor:
    """Image tokens ``(T, D)`` from pooled per-view features ``(1 + cols·rows, side², D)``.

    Order: base-view tokens, then the grid (tiles stitched into one map, unpadded to the image's aspect ratio,
    ``newline`` appended after every row), flattened row-major.
    """
    count, tokens, dim = pooled.shape
    cols, rows = grid
    if count != 1 + cols * rows:
        raise ValueError(f"expected {1 + cols * rows} views (base + {cols}x{rows} grid), got {count}")
    side = math.isqrt(tokens)
    base, tiles = pooled[0], pooled[1:]
    stitched = tiles.view(rows, cols, side, side, dim).permute(4, 0, 2, 1, 3).reshape(dim, rows * side, cols * side)
    row_slice, col_slice = unpad_slices((rows * side, cols * side), image_size)
    stitched = stitched[:, row_slice, col_slice]
    ends = newline.to(stitched.dtype)[:, None, None].expand(dim, stitched.shape[1], 1)
    with_newlines = torch.cat([stitched, ends], dim=-1)
    return torch.cat([base, with_newlines.flatten(1).transpose(0, 1)], dim=0)


def count_image_tokens(image_size: Size, pinpoints: Sequence[Size], tile: int, side: int) -> int:
    """How many tokens :func:`merge_anyres` yields for an image of ``(W, H)`` with ``side``² tokens per pooled view."""
    cols, rows = grid_shape(image_size, pinpoints, tile)
    row_slice, col_slice = unpad_slices((rows * side, cols * side), image_size)
    kept_rows = len(range(rows * side)[row_slice])
    kept_cols = len(range(cols * side)[col_slice])
    return side * side + kept_rows * (kept_cols + 1)
