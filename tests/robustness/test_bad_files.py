"""Bad image files fail the load with an error naming the dataset, the row and the file."""

from __future__ import annotations

import io
import zipfile

import pytest
from PIL import Image

from mmeb_dllm.benchmark.data import safe_extract_zip
from mmeb_dllm.errors import DataError
from tests.robustness.conftest import load, query_image, rewrite

ROW = 3


def _expect(data_root, pattern: str) -> None:
    path = query_image(data_root, "VOC2007", ROW)
    with pytest.raises(DataError) as info:
        load("VOC2007")
    message = str(info.value)
    assert f"dataset VOC2007, row {ROW}" in message and path.name in message, message
    assert pattern in message, message
    assert "MMEB_DLLM_SKIP_BAD_ROWS=1" in message


def test_corrupt_bytes(data_root):
    query_image(data_root, "VOC2007", ROW).write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png at all" * 3)
    _expect(data_root, "cannot be decoded")


def test_missing_file(data_root):
    query_image(data_root, "VOC2007", ROW).unlink()
    _expect(data_root, "is missing")


def test_zero_byte_file(data_root):
    query_image(data_root, "VOC2007", ROW).write_bytes(b"")
    _expect(data_root, "is empty (0 bytes)")


def test_truncated_png(data_root):
    path = query_image(data_root, "VOC2007", ROW)
    path.write_bytes(path.read_bytes()[:60])
    _expect(data_root, "cannot be decoded")


def test_truncated_jpeg(data_root):
    path = query_image(data_root, "VOC2007", ROW)
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])  # .png name, JPEG bytes: format sniffed
    _expect(data_root, "cannot be decoded")


def test_decompression_bomb(data_root, monkeypatch):
    monkeypatch.setenv("MMEB_DLLM_MAX_IMAGE_PIXELS", "1000000")
    Image.new("1", (2000, 1000)).save(query_image(data_root, "VOC2007", ROW))
    _expect(data_root, "2000x1000 = 2000000 pixels, over the limit of 1000000")


def test_image_path_escaping_the_root(data_root):
    (data_root / "secret.png").write_bytes(query_image(data_root, "VOC2007", 0).read_bytes())
    rewrite(data_root, "VOC2007", lambda rows: rows[ROW].update(qry_img_path="../secret.png"))
    with pytest.raises(DataError, match=rf"dataset VOC2007, row {ROW} \(query\): image path '../secret.png' escapes"):
        load("VOC2007")


def test_symlink_leaving_the_root(data_root, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(query_image(data_root, "VOC2007", 0).read_bytes())
    (data_root / "eval_images" / "VOC2007" / "link.png").symlink_to(outside)
    rewrite(data_root, "VOC2007", lambda rows: rows[ROW].update(qry_img_path="VOC2007/link.png"))
    with pytest.raises(DataError, match=rf"row {ROW} \(query\): image path 'VOC2007/link.png' escapes the image root"):
        load("VOC2007")


def test_absolute_image_path(data_root):
    absolute = str(query_image(data_root, "VOC2007", 0))
    rewrite(data_root, "VOC2007", lambda rows: rows[ROW].update(qry_img_path=absolute))
    with pytest.raises(DataError, match=rf"row {ROW} \(query\): image path .* is absolute"):
        load("VOC2007")


def test_zip_with_parent_entries(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/a.png", "fine")
        zf.writestr("../evil.png", "nope")
    with pytest.raises(DataError, match=rf"{archive.name}: refusing unsafe member '../evil.png'"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out").exists()


def test_zip_with_symlink_member(tmp_path):
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("eval_images/link.png")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match=r"refusing symbolic link member 'eval_images/link\.png'"):
        safe_extract_zip(archive, tmp_path / "out")
