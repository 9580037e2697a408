"""moge2_ros.io.msg_codec on plain objects (no ROS): point cloud decoding, duck-typed messages, sync by stamp."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from moge2_ros.bags.decode import depth_from_msg, header_stamp_ns, k_from_camera_info, rgb_from_msg, xyz_from_cloud
from moge2_ros.bags.sync import match_by_stamp, nearest_offset_ns
from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec

RNG = np.random.default_rng(7)


def _cloud_ns(fields: codec.CloudFields) -> SimpleNamespace:
    return SimpleNamespace(
        height=fields.height, width=fields.width, is_bigendian=fields.is_bigendian, point_step=fields.point_step,
        row_step=fields.row_step, data=bytes(fields.data),
        fields=[SimpleNamespace(name=n, offset=o, datatype=7, count=1) for n, o in fields.fields],
    )


def _points(h: int = 5, w: int = 7) -> np.ndarray:
    points = RNG.normal(size=(h, w, 3)).astype(np.float32)
    points[1, 2] = np.nan
    return points


@pytest.mark.parametrize("organized", [True, False])
@pytest.mark.parametrize("with_rgb", [True, False])
def test_cloud_round_trip(organized: bool, with_rgb: bool) -> None:
    points = _points()
    rgb = RNG.integers(0, 256, size=points.shape, dtype=np.uint8) if with_rgb else None
    fields = codec.encode_cloud(points, rgb, organized=organized)
    xyz = xyz_from_cloud(_cloud_ns(fields))
    valid = np.isfinite(points).all(axis=-1)
    np.testing.assert_array_equal(xyz, points[valid])
    all_points = codec.decode_cloud_xyz(_cloud_ns(fields), finite_only=False)
    assert all_points.shape[0] == (points.shape[0] * points.shape[1] if organized else valid.sum())


def test_cloud_padding_big_endian_and_float64() -> None:
    """A foreign layout: FLOAT64 x/y/z at offsets 8/16/24 after an intensity, 4 pad bytes per row, big-endian."""
    xyz = RNG.normal(size=(3, 4, 3))
    record = np.dtype([("intensity", ">f4"), ("pad", ">u4"), ("x", ">f8"), ("y", ">f8"), ("z", ">f8")])
    rows = np.zeros((3, 4), dtype=record)
    rows["x"], rows["y"], rows["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    data = b"".join(row.tobytes() + b"\xab" * 4 for row in rows)
    msg = SimpleNamespace(
        height=3, width=4, is_bigendian=True, point_step=record.itemsize, row_step=4 * record.itemsize + 4, data=data,
        fields=[SimpleNamespace(name="intensity", offset=0, datatype=7, count=1)]
        + [SimpleNamespace(name=n, offset=8 + 8 * i, datatype=8, count=1) for i, n in enumerate("xyz")],
    )
    np.testing.assert_array_equal(xyz_from_cloud(msg), xyz.reshape(-1, 3).astype(np.float32))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"fields": []}, "expected fields x, y, z"),
        ({"row_step": 3}, "row_step"),
        ({"data": b"\x00" * 10}, "point cloud.data"),
        ({"point_step": 8}, "offset"),
    ],
)
def test_cloud_errors(change: dict, needle: str) -> None:
    msg = _cloud_ns(codec.encode_cloud(_points()))
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(InputError, match=needle):
        xyz_from_cloud(msg)


def test_duck_typed_images_and_camera_info() -> None:
    rgb = RNG.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    msg = SimpleNamespace(**vars(codec.encode_rgb(rgb, "bgr8")))
    np.testing.assert_array_equal(rgb_from_msg(msg), rgb)
    grey16 = SimpleNamespace(height=2, width=2, encoding="mono16", is_bigendian=0, step=4,
                             data=np.array([[0, 65535], [257, 32896]], "<u2").tobytes())
    np.testing.assert_array_equal(rgb_from_msg(grey16)[..., 0], [[0, 255], [1, 128]])
    depth = np.array([[1.5, -1.0], [np.inf, 0.0]], dtype=np.float32)
    decoded = depth_from_msg(SimpleNamespace(**vars(codec.encode_depth(depth, "32FC1"))))
    assert decoded[0, 0] == np.float32(1.5) and np.isnan(decoded.ravel()[1:]).all()
    k = np.array([[100.0, 0, 3.0], [0, 90.0, 2.0], [0, 0, 1]])
    info = SimpleNamespace(**{**vars(codec.encode_camera_info(k, 6, 4)),
                              "roi": SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0)})
    np.testing.assert_array_equal(k_from_camera_info(info), k)
    with pytest.raises(InputError, match="expected the size of the image 8x4"):
        k_from_camera_info(info, 8, 4)
    with pytest.raises(InputError, match="field 'encoding'"):
        rgb_from_msg(SimpleNamespace(width=1))
    stamp = SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=12, nanosec=34)))
    assert header_stamp_ns(stamp) == 12_000_000_034


def test_match_by_stamp_is_one_to_one_within_tolerance() -> None:
    images = [100, 200, 300, 400]
    depths = [305, 102, 199, 198, 900]  # unsorted; two candidates near 200; none near 400
    assert match_by_stamp(images, depths, 5) == [(0, 1), (1, 2), (2, 0)]
    assert match_by_stamp(images, depths, 1) == [(1, 2)]
    assert match_by_stamp(images, [], 10) == []
    # the closest pair wins a shared candidate; the loser falls back to its second choice within tolerance
    assert match_by_stamp([10, 12], [11, 14], 3) == [(0, 0), (1, 1)]
    assert nearest_offset_ns(images, depths) == 1
    with pytest.raises(InputError, match="tolerance_ns"):
        match_by_stamp(images, depths, -1)
