"""Truncated compressed images are rejected before the full-size decode (msg_codec, no ROS)."""

from __future__ import annotations

import io
import struct
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageFile

import moge2_ros.io.msg_codec as codec
from moge2_ros.io.msg_codec import ConversionError, decode_compressed_rgb, jpeg_scan_shortfall


def _jpeg(array: np.ndarray, **options) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(array).save(stream, format="JPEG", **options)
    return stream.getvalue()


def _png(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(array).save(stream, format="PNG")
    return stream.getvalue()


def _msg(data: bytes, fmt: str = "jpeg") -> SimpleNamespace:
    return SimpleNamespace(format=fmt, data=data)


def _claim_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Rewrite the frame header (SOF0 or SOF2) to claim ``width x height``; the scan data stays as it is."""
    data = bytearray(jpeg)
    sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
    assert sof > 0
    data[sof + 5:sof + 7] = height.to_bytes(2, "big")
    data[sof + 7:sof + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _noise(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_pillow_truncated_images_setting_is_off():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("progressive", [False, True])
def test_tiny_jpeg_claiming_6000x6000_is_rejected_before_decoding(monkeypatch, progressive):
    """The issue's message: a header of 6000x6000 over 16x16 of scan data (libjpeg would fill in grey)."""
    data = _claim_size(_jpeg(_noise(16, 16), quality=50, progressive=progressive), 6000, 6000)
    assert len(data) < 1000
    assert jpeg_scan_shortfall(data) is not None
    monkeypatch.setattr(codec, "_pil_to_rgb", lambda image: pytest.fail("decoded a truncated image"))
    t0 = time.perf_counter()
    with pytest.raises(ConversionError, match=r"expected a complete JPEG image of 6000x6000, found truncated data "
                                              r"\(its scans need at least \d+ bytes for that size, found \d+\)"):
        decode_compressed_rgb(_msg(data))
    assert time.perf_counter() - t0 < 0.1


def test_without_the_check_pillow_would_decode_it_at_full_size():
    """Shows the check is needed: Pillow alone decodes the 6000x6000 claim without an error."""
    data = _claim_size(_jpeg(_noise(16, 16), quality=50), 600, 600)
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.size == (600, 600)
    with pytest.raises(ConversionError, match="found truncated data"):
        decode_compressed_rgb(_msg(data))


def test_jpeg_cut_early_with_an_end_marker_is_rejected():
    data = _jpeg(_noise(768, 1024), quality=90)
    sos = data.find(b"\xff\xda")
    cut = data[:sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big") + 300] + b"\xff\xd9"
    with pytest.raises(ConversionError, match="expected a complete JPEG image of 1024x768, found truncated data"):
        decode_compressed_rgb(_msg(cut))


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_jpeg_and_png_data_that_ends_early_is_rejected(cut):
    jpeg, png = _jpeg(_noise(96, 128)), _png(_noise(96, 128))
    for data, fmt in ((jpeg, "jpeg"), (png, "png")):
        with pytest.raises(ConversionError, match="corrupt or truncated|truncated data"):
            decode_compressed_rgb(_msg(data[: int(len(data) * cut)], fmt))


def test_png_with_short_image_data_and_an_end_chunk_is_rejected():
    png = _png(_noise(96, 128))
    pos, chunks = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        chunks.append((png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]))
        pos += 12 + length
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    short = png[:8] + chunk(b"IHDR", chunks[0][1]) + chunk(b"IDAT", idat[: len(idat) // 3]) + chunk(b"IEND", b"")
    with pytest.raises(ConversionError, match="corrupt or truncated"):
        decode_compressed_rgb(_msg(short, "png"))


@pytest.mark.parametrize("mode,options", [
    ("RGB", {"optimize": True}),
    ("RGB", {"optimize": True, "progressive": True}),
    ("RGB", {"optimize": True, "subsampling": 0}),
    ("L", {"optimize": True}),
    ("L", {"optimize": True, "progressive": True}),
    ("RGB", {"quality": 5}),
])
def test_complete_uniform_jpegs_at_the_bound_are_accepted(mode, options):
    """A flat image with optimised Huffman tables spends ~1 bit per DC and per EOB: the least a complete scan can."""
    array = np.full((1000, 1500, 3) if mode == "RGB" else (1000, 1500), 77, dtype=np.uint8)
    data = _jpeg(array, **options)
    assert jpeg_scan_shortfall(data) is None
    out = decode_compressed_rgb(_msg(data))
    assert out.shape == (1000, 1500, 3)


def test_ordinary_jpegs_are_accepted():
    for options in ({}, {"progressive": True}, {"quality": 95, "subsampling": 0}):
        data = _jpeg(_noise(48, 64), **options)
        assert jpeg_scan_shortfall(data) is None
        assert decode_compressed_rgb(_msg(data)).shape == (48, 64, 3)


def test_size_is_checked_against_max_pixels_before_decoding(monkeypatch):
    data = _png(np.zeros((600, 600, 3), dtype=np.uint8))
    monkeypatch.setattr(codec, "_pil_to_rgb", lambda image: pytest.fail("decoded an image above max_pixels"))
    with pytest.raises(ConversionError, match=r"at most max_pixels = 100000 pixels, found 600x600 = 360000"):
        decode_compressed_rgb(_msg(data, "png"), max_pixels=100_000)
