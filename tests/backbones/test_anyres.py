"""Anyres geometry helpers: best resolution, padding, tiling order, unpadding, merge layout, token counts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from mmeb_dllm.backbones import anyres
from mmeb_dllm.errors import ConfigError

PINPOINTS = [(54, 108), (108, 54), (108, 108), (162, 54), (54, 162)]


def test_best_resolution_prefers_resolution_then_least_waste() -> None:
    assert anyres.select_best_resolution((97, 41), PINPOINTS) == (108, 54)
    assert anyres.select_best_resolution((41, 97), PINPOINTS) == (54, 108)
    # both keep all 100 pixels; (20, 10) wastes less canvas
    assert anyres.select_best_resolution((10, 10), [(20, 20), (20, 10)]) == (20, 10)


def test_resize_and_pad_centres_on_black() -> None:
    image = Image.new("RGB", (40, 10), (255, 255, 255))
    canvas = anyres.resize_and_pad(image, (20, 20))
    assert canvas.size == (20, 20)
    assert canvas.getpixel((0, 0)) == (0, 0, 0) and canvas.getpixel((10, 10)) == (255, 255, 255)
    assert canvas.getpixel((10, 4)) == (0, 0, 0) and canvas.getpixel((10, 15)) == (0, 0, 0)


def test_views_base_first_then_row_major() -> None:
    image = Image.new("RGB", (4, 2))
    image.putpixel((0, 0), (255, 0, 0))
    image.putpixel((3, 1), (0, 255, 0))
    views = anyres.anyres_views(image, [(4, 2)], 2)
    assert [v.size for v in views] == [(2, 2)] * 3
    assert views[1].getpixel((0, 0)) == (255, 0, 0) and views[2].getpixel((1, 1)) == (0, 255, 0)


def test_pixels_are_rescaled_and_normalised() -> None:
    pixels = anyres.preprocess_anyres(Image.new("RGB", (4, 4), (255, 0, 51)), [(4, 4)], 4, [0.5] * 3, [0.5] * 3)
    assert pixels.shape == (2, 3, 4, 4) and pixels.dtype == torch.float32
    assert torch.allclose(pixels[:, 0], torch.tensor(1.0)) and torch.allclose(pixels[:, 1], torch.tensor(-1.0))
    assert torch.allclose(pixels[:, 2], torch.tensor(51 / 255 * 2 - 1))


def test_unpad_keeps_upstream_rows() -> None:
    # int(41 * 28 / 97) = 11 rows of 14; pad (14 - 11) // 2 = 1 → rows 1..12 (12 rows, one more than computed)
    rows, cols = anyres.unpad_slices((14, 28), (97, 41))
    assert (rows, cols) == (slice(1, 13), slice(0, 28))
    rows, cols = anyres.unpad_slices((28, 14), (41, 97))
    assert (rows, cols) == (slice(0, 28), slice(1, 13))


def test_pool_sizes_and_modes() -> None:
    features = torch.randn(3, 27 * 27, 5)
    assert anyres.pool_2d(features, "bilinear").shape == (3, 14 * 14, 5)
    assert anyres.pool_2d(features, "average").shape == (3, 13 * 13, 5)
    assert anyres.pool_2d(features, "max").shape == (3, 13 * 13, 5)
    with pytest.raises(ConfigError, match="mm_spatial_pool_mode"):
        anyres.pool_2d(features, "nearest")


@pytest.mark.parametrize("size", [(97, 41), (41, 97), (54, 54), (300, 20), (7, 190)])
def test_merge_layout_and_count(size: tuple[int, int]) -> None:
    side, dim = 3, 2
    cols, rows = anyres.grid_shape(size, PINPOINTS, 54)
    pooled = torch.arange((1 + cols * rows) * side * side * dim, dtype=torch.float32).view(-1, side * side, dim)
    newline = torch.full((dim,), -1.0)
    merged = anyres.merge_anyres(pooled, size, (cols, rows), newline)
    assert merged.shape[0] == anyres.count_image_tokens(size, PINPOINTS, 54, side)
    torch.testing.assert_close(merged[: side * side], pooled[0])
    grid = merged[side * side :]
    is_newline = (grid == -1.0).all(dim=-1)
    row_slice, col_slice = anyres.unpad_slices((rows * side, cols * side), size)
    width = len(range(cols * side)[col_slice])
    assert is_newline.nonzero().flatten().tolist() == list(range(width, grid.shape[0], width + 1))
    assert grid.shape[0] == len(range(rows * side)[row_slice]) * (width + 1)


def test_pinpoints_validation() -> None:
    assert anyres.parse_pinpoints([[54, 108], [108, 54]]) == [(54, 108), (108, 54)]
    with pytest.raises(ConfigError, match="image_grid_pinpoints"):
        anyres.parse_pinpoints("(1x1),...,(6x6)")
