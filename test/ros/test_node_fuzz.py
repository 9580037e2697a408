"""A running ``moge2_node`` survives thousands of malformed input messages (DESIGN §4: a bad message is logged,
counted and skipped).

Messages are built here with a fixed-seed numpy RNG, within what the ROS types allow (a uint32 field holds any
uint32, a float64 array any double): absurd sizes, wrong steps, short / empty / random data, unknown encodings;
random, truncated and bit-flipped JPEG / PNG, decompression-bomb headers, unsupported formats; CameraInfo with
NaN / Inf / zero / negative / skewed / absurd K, wrong sizes, binning, ROI. Some of them are valid and are
processed. They are published at a bounded rate; then:

* the node process is still alive and reports ``errors == 0`` (no frame failed for a reason other than bad input);
* ``bad_input`` grew, and the node's frame accounting is exact: every received image was processed, dropped
  (overwritten in the latest-frame slot before the worker took it) or rejected as bad input
  (``received == processed + dropped + bad_input + errors`` over the run, read when the counters are stable);
* a good frame published afterwards is still processed (depth arrives).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest

from moge2_ros.data.example import render_example_scene
from moge2_ros.ros.conversions import image_to_float
from ros_helpers import RosClient, RunningNode, header, jpeg_image, publish_paced, rgb_image, start_node

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SEED = 20250611
NUM_IMAGES, IMAGE_HZ = 2000, 250.0
NUM_COMPRESSED, COMPRESSED_HZ = 500, 100.0
NUM_CAMERA_INFO, CAMERA_INFO_HZ = 500, 40.0  # each followed by a good frame
WIDTH, HEIGHT = 64, 48
FRAME_ID = "fuzz_optical_frame"
UINT32_MAX = 2**32 - 1

_BYTES_PER_PIXEL = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 2,
                    "8UC3": 3, "8UC1": 1, "16UC1": 2}
_BAD_ENCODINGS = ["", "yuv422", "32FC1", "16SC1", "bayer_rggb8", "rgb16", "jpeg", "8UC4", "64FC1",
                  "\u0155gb8", "rgb8;", "   ", "x" * 300, "bgr8 compressed", "mono32", "8UC2"]


# ------------------------------------------------------------------------------------------------ fixtures
# workdir, env, client: module-scoped fixtures of test/ros/conftest.py; tiny_model_path: test/conftest.py

@pytest.fixture(scope="module")
def good_rgb() -> np.ndarray:
    return render_example_scene(WIDTH, HEIGHT, 60.0).rgb


def start(client: RosClient, env: dict[str, str], workdir: Path, model: Path, namespace: str,
          **params: Any) -> RunningNode:
    # Only depth/image is subscribed: the node computes only what is subscribed, so good frames stay cheap.
    return start_node(client, env, workdir, model, namespace, outputs=("depth/image",), frame_id=FRAME_ID,
                      num_tokens=108, diagnostics_period=0.25, **params)


def deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in ("received", "processed", "dropped", "bad_input", "over_budget", "errors")}


def check_still_serving(node: RunningNode, rgb: np.ndarray) -> None:
    """A good frame after the fuzzing is processed; the process is alive."""
    assert node.process.alive(), node.process.output()[-4000:]
    _, out = node.frame(rgb, topics=("depth/image",))
    depth = image_to_float(out["depth/image"])
    assert depth.shape == rgb.shape[:2] and np.isfinite(depth).any()
    check_clean_log(node)


def check_clean_log(node: RunningNode) -> None:
    """Bad input is logged as throttled warnings: no error line, no traceback."""
    log = node.process.output()
    assert "Traceback" not in log and "[ERROR]" not in log and "[FATAL]" not in log, log[-4000:]


# ------------------------------------------------------------------------------------------------ generators
def fuzz_image(rng: np.random.Generator, stamp: Any, malformed_only: bool = False) -> tuple[Image, bool]:
    """A random Image message and whether it is malformed by construction (always, with ``malformed_only``)."""
    encoding = str(rng.choice(list(_BYTES_PER_PIXEL)))
    bpp = _BYTES_PER_PIXEL[encoding]
    width, height = (int(v) for v in rng.integers(1, 48, size=2))
    step = width * bpp
    size = step * height
    bad = True
    kind = int(rng.integers(0, 8 if malformed_only else 10))
    if kind == 0:  # unsupported encoding
        encoding = str(rng.choice(_BAD_ENCODINGS))
    elif kind == 1:  # empty image
        width, height = (0, height) if rng.random() < 0.5 else (width, 0)
        step, size = width * bpp, 0
    elif kind == 2:  # absurd size (over max_pixels), little data
        width, height = (int(v) for v in rng.integers(7000, UINT32_MAX, size=2, endpoint=True))
        step = min(width * bpp, UINT32_MAX)
        size = int(rng.integers(0, 4096))
    elif kind == 3:  # step smaller than a row
        step = int(rng.integers(0, width * bpp))
    elif kind == 4:  # absurd step
        step = int(rng.integers(width * bpp + 1, UINT32_MAX, endpoint=True))
        size = int(rng.integers(0, 8192))
    elif kind == 5:  # data shorter than step * height
        size = int(rng.integers(0, step * height))
    elif kind == 6:  # no data at all
        size = 0
    elif kind == 7:  # sizes whose products overflow 32 bits
        width, height, step = 2**31 + int(rng.integers(0, 100)), 2, UINT32_MAX
        size = int(rng.integers(0, 1024))
    else:  # valid: random pixels, tiny or odd shapes, row padding, trailing bytes, either byte order
        bad = False
        if kind == 8:
            width, height = [(1, 1), (1, 47), (47, 1), (2, 2), (3, 200), (200, 3)][int(rng.integers(0, 6))]
        step = width * bpp + int(rng.integers(0, 5))
        size = step * height + int(rng.integers(0, 17))
        encoding = encoding.upper() if rng.random() < 0.2 else encoding  # encodings match case-insensitively
    msg = Image(header=header(stamp, FRAME_ID), height=height, width=width, encoding=encoding,
                is_bigendian=int(rng.integers(0, 256)) if rng.random() < 0.3 else int(rng.integers(0, 2)),
                step=step, data=rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    return msg, bad


def _png(rgb: np.ndarray, mode: str | None = None) -> bytes:
    """PNG of ``rgb`` in a Pillow ``mode`` (None: RGB; 'I;16': 16-bit grey)."""
    buffer = io.BytesIO()
    if mode == "I;16":
        grey = (rgb.astype(np.uint32).sum(axis=-1) * 85).astype(np.uint16)
        image = PILImage.fromarray(grey)
    else:
        image = PILImage.fromarray(rgb)
        if mode is not None:
            image = image.convert(mode)
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _png_with_size(png: bytes, width: int, height: int) -> bytes:
    """The PNG with its IHDR size replaced (and the chunk CRC fixed): a decompression-bomb header."""
    ihdr = bytearray(png[12:29])  # b'IHDR' + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    return png[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF) + png[33:]


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF0 frame size replaced."""
    at = jpeg.find(b"\xff\xc0")
    data = bytearray(jpeg)
    if at >= 0:
        data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def fuzz_compressed(rng: np.random.Generator, stamp: Any,
                    bases: dict[str, list[bytes]]) -> tuple[CompressedImage, bool | None]:
    """A random CompressedImage and whether it is malformed by construction (None: maybe, e.g. bit flips)."""
    kind = int(rng.integers(0, 12))
    fmt = str(rng.choice(["jpeg", "png", "", "rgb8; jpeg compressed bgr8", "bgr8; png compressed bgr8", "JPEG"]))
    bad: bool | None = True
    jpeg = bases["jpeg"][int(rng.integers(0, len(bases["jpeg"])))]
    png = bases["png"][int(rng.integers(0, len(bases["png"])))]
    if kind == 0:
        data = b""
    elif kind == 1:
        data = rng.integers(0, 256, int(rng.integers(1, 3000)), dtype=np.uint8).tobytes()
    elif kind in (2, 3):  # truncated: a PNG cut after its image data still decodes (then it is a valid frame)
        whole = jpeg if kind == 2 else png
        data, bad = whole[: int(rng.integers(1, len(whole)))], None
    elif kind in (4, 5):  # bit flips after the signature: may still decode (then it is a valid frame)
        buffer = bytearray(jpeg if kind == 4 else png)
        for at in rng.integers(8, len(buffer), size=int(rng.integers(1, 20))):
            buffer[int(at)] ^= 1 << int(rng.integers(0, 8))
        data, bad = bytes(buffer), None
    elif kind == 6:
        data = _png_with_size(png, int(rng.integers(20000, 2**31 - 1)), int(rng.integers(20000, 2**31 - 1)))
    elif kind == 7:
        data = _jpeg_with_size(jpeg, int(rng.integers(10000, 65536)), int(rng.integers(10000, 65536)))
    elif kind == 8:  # a valid image under an unsupported format string
        data = jpeg
        fmt = str(rng.choice(["tiff", "compressedDepth png", "bmp", "rgb8; tiff compressed bgr8",
                              "16UC1; compressedDepth"]))
    elif kind == 9:  # other image formats: the decoder only accepts JPEG and PNG
        buffer = io.BytesIO()
        PILImage.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format=str(rng.choice(["GIF", "BMP", "TIFF"])))
        data, fmt = buffer.getvalue(), ""
    else:  # valid JPEG or PNG
        data, bad = (jpeg, False) if kind == 10 else (png, False)
        fmt = "jpeg" if kind == 10 else "png"
    return CompressedImage(header=header(stamp, FRAME_ID), format=fmt, data=data), bad


def fuzz_camera_info(rng: np.random.Generator, stamp: Any, width: int,
                     height: int) -> tuple[CameraInfo, bool | None]:
    """A random CameraInfo for images of ``width x height`` and whether it is malformed by construction (None:
    it passes the checks but is absurd)."""
    fx, fy = (float(v) for v in rng.uniform(20.0, 200.0, size=2))
    cx, cy = float(rng.uniform(0, width)), float(rng.uniform(0, height))
    k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    info_w, info_h = (width, height) if rng.random() < 0.8 else (0, 0)
    binning = (0, 0)
    roi = RegionOfInterest()
    bad: bool | None = True
    kind = int(rng.integers(0, 12))
    if kind == 0:
        k[int(rng.choice([0, 2, 4, 5, 8]))] = math.nan
    elif kind == 1:
        k[int(rng.choice([0, 2, 4, 5]))] = float(rng.choice([math.inf, -math.inf]))
    elif kind == 2:
        k[:] = 0.0
    elif kind == 3:
        k[int(rng.choice([0, 4]))] *= -1.0
    elif kind == 4:
        k[int(rng.choice([1, 3, 6, 7]))] = float(rng.uniform(-5, 5)) or 1.0
    elif kind == 5:
        k[8] = float(rng.choice([0.0, 2.0, -1.0]))
    elif kind == 6:
        info_w, info_h = (int(v) for v in rng.integers(1, UINT32_MAX, size=2, endpoint=True))
    elif kind == 7:
        binning = (int(rng.integers(2, 9)), int(rng.integers(0, 9)))
    elif kind == 8:
        roi = RegionOfInterest(x_offset=int(rng.integers(0, 10)), y_offset=int(rng.integers(1, 10)),
                               width=int(rng.integers(1, width)), height=int(rng.integers(1, height)))
    elif kind == 9:  # positive and finite, but absurd: tiny or huge focal lengths, far-away principal point
        k[int(rng.choice([0, 4]))] = float(rng.choice([1e-300, 1e-30, 1e30, 1e300]))
        k[2] = float(rng.choice([cx, 1e200, -1e200]))
        bad = None  # valid by the checks; the model may find no valid pixel
    else:  # valid, with garbage in the fields that are not used
        bad = False
    d = rng.normal(size=int(rng.integers(0, 20))).tolist()
    if d and rng.random() < 0.3:
        d[0] = math.nan
    model = str(rng.choice(["plumb_bob", "rational_polynomial", "equidistant", "", "??"]))
    r, p = rng.normal(size=9).tolist(), rng.normal(size=12).tolist()
    if bad is False:  # valid: no distortion (any model name) or a mild plumb_bob one; R and P valid or all zero
        d = [] if rng.random() < 0.3 else [0.0] * 5 if rng.random() < 0.5 else [-0.05, 0.01, 0.0, 0.0, 0.0]
        model = "plumb_bob" if any(d) else model
        r = np.eye(3).ravel().tolist() if rng.random() < 0.7 else [0.0] * 9
        p = np.hstack([k.reshape(3, 3), np.zeros((3, 1))]).ravel().tolist() if rng.random() < 0.7 else [0.0] * 12
    msg = CameraInfo(header=header(stamp, FRAME_ID), width=info_w, height=info_h, distortion_model=model,
                     d=d, k=k.tolist(), r=r, p=p, binning_x=binning[0], binning_y=binning[1], roi=roi)
    return msg, bad


# ------------------------------------------------------------------------------------------------ tests
def test_fuzz_raw_images_and_camera_info(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path,
                                         good_rgb: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    node = start(client, env, workdir, tiny_model_path, "/fuzz", intrinsics_source="camera_info")
    try:
        node.frame(good_rgb, topics=("depth/image",))  # warm-up; outputs matched
        start_counters = node.stable_counters()

        # --- phase 1: malformed images, then a mix with valid ones (odd shapes, padding, byte orders)
        malformed_only = NUM_IMAGES * 3 // 4
        kinds = {True: 0, False: 0}

        def publish_image(i: int) -> None:
            msg, bad = fuzz_image(rng, client.now(), malformed_only=i < malformed_only)
            kinds[bad] += 1
            node.image_pub.publish(msg)

        seconds = publish_paced(client, publish_image, malformed_only, IMAGE_HZ, node.process)
        after_malformed = node.stable_counters()
        d = deltas(start_counters, after_malformed)
        print(f"\nimages: {malformed_only} malformed published in {seconds:.1f} s; node: {d}")
        assert d["errors"] == 0, f"frames failed for another reason than bad input: {after_malformed.get('last_error')}"
        # Oversized headers are refused by the memory budget's image limit (over_budget), the rest as bad input.
        assert d["received"] == d["processed"] + d["dropped"] + d["bad_input"] + d["over_budget"], d
        assert d["received"] >= 0.9 * malformed_only, d
        assert d["processed"] == 0, d
        assert d["bad_input"] + d["over_budget"] >= 0.8 * d["received"], d  # at a bounded rate the worker checks nearly every one

        seconds = publish_paced(client, lambda i: publish_image(malformed_only + i), NUM_IMAGES - malformed_only,
                                IMAGE_HZ, node.process)
        after_images = node.stable_counters()
        d = deltas(start_counters, after_images)
        print(f"images: {NUM_IMAGES} published in all ({kinds[True]} malformed, {kinds[False]} valid), the last "
              f"{NUM_IMAGES - malformed_only} in {seconds:.1f} s; node: {d}")
        assert node.process.alive(), node.process.output()[-4000:]
        assert d["errors"] == 0, f"frames failed for another reason than bad input: {after_images.get('last_error')}"
        assert d["received"] == d["processed"] + d["dropped"] + d["bad_input"] + d["over_budget"] + d["errors"], d
        assert d["received"] >= 0.9 * NUM_IMAGES, d
        assert d["bad_input"] + d["over_budget"] <= kinds[True], d  # valid frames are never rejected
        assert d["processed"] > 0
        check_still_serving(node, good_rgb)

        # --- phase 2: camera_info, each followed by a good frame that uses it
        before_info = node.stable_counters()
        info_kinds = {True: 0, False: 0, None: 0}

        def publish_info(i: int) -> None:
            msg, bad = fuzz_camera_info(rng, client.now(), WIDTH, HEIGHT)
            info_kinds[bad] += 1
            node.info_pub.publish(msg)
            node.image_pub.publish(rgb_image(client.now(), good_rgb, FRAME_ID))

        seconds = publish_paced(client, publish_info, NUM_CAMERA_INFO, CAMERA_INFO_HZ, node.process)
        after_info = node.stable_counters()
        d = deltas(before_info, after_info)
        print(f"camera_info: published {NUM_CAMERA_INFO} ({info_kinds[True]} malformed, {info_kinds[None]} absurd, "
              f"{info_kinds[False]} valid) with as many good frames in {seconds:.1f} s; node: {d}")
        assert node.process.alive(), node.process.output()[-4000:]
        assert d["errors"] == 0, f"frames failed for another reason than bad input: {after_info.get('last_error')}"
        # A rejected CameraInfo is counted once (bad_input) and the frame is still processed with estimated
        # intrinsics; a frame whose absurd intrinsics fail the geometry is counted as bad input instead.
        assert d["processed"] + d["dropped"] <= d["received"] <= (d["processed"] + d["dropped"] + d["bad_input"]
                                                                  + d["over_budget"]), d
        assert d["bad_input"] >= 20, d
        assert d["bad_input"] <= info_kinds[True] + info_kinds[None], d
        assert d["processed"] >= 50, d
        check_still_serving(node, good_rgb)
    finally:
        node.stop()


def test_fuzz_compressed_images(client: RosClient, env: dict[str, str], workdir: Path, tiny_model_path: Path,
                                good_rgb: np.ndarray) -> None:
    rng = np.random.default_rng(SEED + 1)
    base_rgbs = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in rng.integers(4, 64, (6, 2))]
    base_rgbs.append(good_rgb)
    bases = {
        "jpeg": [_jpeg(rgb, int(q)) for rgb, q in zip(base_rgbs, rng.integers(10, 96, len(base_rgbs)))],
        "png": [_png(rgb, mode) for rgb, mode in zip(base_rgbs, [None, "L", "RGBA", "P", "I;16", "LA", None])],
    }
    node = start(client, env, workdir, tiny_model_path, "/fuzz_jpeg", input_topic="image/compressed",
                 input_type=CompressedImage, image_transport="compressed")
    try:
        warmup, _ = jpeg_image(client.now(), good_rgb, FRAME_ID)
        client.request(lambda: node.image_pub.publish(warmup), warmup.header.stamp, [node.outputs["depth/image"]],
                       process=node.process)
        before = node.stable_counters()
        kinds = {True: 0, False: 0, None: 0}

        def publish(i: int) -> None:
            msg, bad = fuzz_compressed(rng, client.now(), bases)
            kinds[bad] += 1
            node.image_pub.publish(msg)

        seconds = publish_paced(client, publish, NUM_COMPRESSED, COMPRESSED_HZ, node.process)
        after = node.stable_counters()
        d = deltas(before, after)
        print(f"compressed: published {NUM_COMPRESSED} ({kinds[True]} malformed, {kinds[None]} bit-flipped, "
              f"{kinds[False]} valid) in {seconds:.1f} s; node: {d}")
        assert node.process.alive(), node.process.output()[-4000:]
        assert d["errors"] == 0, f"frames failed for another reason than bad input: {after.get('last_error')}"
        assert d["received"] == d["processed"] + d["dropped"] + d["bad_input"] + d["over_budget"] + d["errors"], d
        assert d["received"] >= 0.9 * NUM_COMPRESSED, d
        assert d["bad_input"] + d["over_budget"] >= 0.5 * kinds[True], d
        assert d["bad_input"] + d["over_budget"] <= kinds[True] + kinds[None], d
        assert d["processed"] > 0

        good, _ = jpeg_image(client.now(), good_rgb, FRAME_ID)
        got = client.request(lambda: node.image_pub.publish(good), good.header.stamp, [node.outputs["depth/image"]],
                             process=node.process)
        depth = image_to_float(next(iter(got.values())))
        assert depth.shape == good_rgb.shape[:2] and np.isfinite(depth).any()
        assert node.process.alive()
        check_clean_log(node)
    finally:
        node.stop()
