"""Unusual but valid images are converted correctly (documented in docs/robustness.md)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mmeb_dllm.benchmark.images import open_image


def _pixels(path) -> np.ndarray:
    return np.asarray(open_image(path))


def test_cmyk_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)  # pure red in CMYK
    pixels = _pixels(path)
    assert pixels.shape == (8, 8, 3)
    assert pixels[..., 0].min() > 200 and pixels[..., 1].max() < 60 and pixels[..., 2].max() < 60


def test_rgba_drops_alpha_keeping_colour(tmp_path):
    path = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 4), (10, 200, 30, 0)).save(path)
    assert (_pixels(path) == [10, 200, 30]).all()


def test_greyscale_is_replicated(tmp_path):
    path = tmp_path / "l.png"
    Image.new("L", (4, 4), 77).save(path)
    assert (_pixels(path) == 77).all()


def test_16_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    path = tmp_path / "i16.png"
    array = np.array([[0, 32768], [65535, 256]], dtype=np.uint16)
    Image.fromarray(array).save(path)  # uint16 -> mode I;16
    pixels = _pixels(path)[..., 0]
    assert pixels.tolist() == [[0, 128], [255, 1]]


def test_palette_colours_are_kept(tmp_path):
    path = tmp_path / "p.png"
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putdata([0, 1])
    image.save(path)
    assert _pixels(path).tolist() == [[[255, 0, 0], [0, 0, 255]]]


def test_animated_gif_uses_the_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    pixels = _pixels(path)
    assert pixels[..., 0].min() > 200 and pixels[..., 1].max() < 40


def test_exif_rotated_jpeg_is_upright(tmp_path):
    path = tmp_path / "rotated.jpg"
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # red band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif, quality=100)
    upright = _pixels(path)
    assert upright.shape == (40, 20, 3)  # portrait once rotated
    assert upright[:8, :, 1].mean() < 60  # the left band is now on top
