"""Metric sensor messages -> anchors (moge2_ros.pipeline.anchor_msgs), on plain objects with the message fields."""

from __future__ import annotations

import math
from types import SimpleNamespace as NS

import numpy as np
import pytest

from moge2_ros.anchors import AnchorError, DropCounts, Extrinsic
from moge2_ros.errors import InputError
from moge2_ros.io import msg_codec as codec
from moge2_ros.pipeline.anchor_msgs import (
    cloud_anchor,
    depth_anchor,
    extrinsic_param,
    range_anchor,
    stamp_seconds,
    transform_extrinsic,
)


def header(sec: int = 12, nanosec: int = 500_000_000) -> NS:
    return NS(stamp=NS(sec=sec, nanosec=nanosec), frame_id="lidar")


def cloud_msg(points: np.ndarray) -> NS:
    f = codec.encode_cloud(points[None].astype(np.float32), None, None, organized=True, stride=1)
    fields = [NS(name=n, offset=o, datatype=7, count=1) for n, o in f.fields]
    return NS(header=header(), height=f.height, width=f.width, fields=fields, is_bigendian=f.is_bigendian,
              point_step=f.point_step, row_step=f.row_step, data=bytes(f.data), is_dense=f.is_dense)


def test_stamp_seconds() -> None:
    assert stamp_seconds(header(3, 250_000_000)) == pytest.approx(3.25)
    with pytest.raises(AnchorError, match="stamp"):
        stamp_seconds(NS(frame_id="x"))


def test_cloud_anchor_keeps_points_and_transform() -> None:
    pts = np.array([[1.0, 2.0, 3.0], [np.nan, 0.0, 1.0], [-1.0, 0.5, 4.0]])
    ext = Extrinsic((0.1, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    anchor = cloud_anchor(cloud_msg(pts), ext)
    expected = pts.astype(np.float32)
    expected[1] = np.nan  # the encoder marks an invalid point NaN in x, y, z
    np.testing.assert_array_equal(anchor.points, expected)  # NaN rows kept: the anchoring counts them
    assert anchor.extrinsic == ext and anchor.stamp == pytest.approx(12.5)


def test_cloud_anchor_refuses_malformed_and_huge_clouds() -> None:
    msg = cloud_msg(np.ones((4, 3)))
    msg.data = msg.data[:-1]
    with pytest.raises(AnchorError, match="data"):
        cloud_anchor(msg)
    big = cloud_msg(np.ones((4, 3)))
    big.width = 3_000_000
    big.height = 2
    with pytest.raises(AnchorError):
        cloud_anchor(big, max_points=1_000_000)
    with pytest.raises(AnchorError, match="quaternion"):
        cloud_anchor(cloud_msg(np.ones((2, 3))), Extrinsic((0, 0, 0), (0, 0, 0, 2.0)))


def test_depth_anchor_16uc1_millimetres() -> None:
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    f = codec.encode_image(mm, "16UC1")
    anchor = depth_anchor(NS(header=header(), height=f.height, width=f.width, encoding=f.encoding,
                             is_bigendian=f.is_bigendian, step=f.step, data=f.data))
    assert np.isnan(anchor.depth[0, 0])
    assert anchor.depth[0, 1] == pytest.approx(1.0) and anchor.depth[1, 0] == pytest.approx(2.5)
    bad = NS(header=header(), height=2, width=2, encoding="rgb8", is_bigendian=0, step=6, data=bytes(12))
    with pytest.raises(AnchorError, match="encoding"):
        depth_anchor(bad)


def test_range_anchor_rep117() -> None:
    msg = NS(header=header(), radiation_type=1, field_of_view=0.1, min_range=0.05, max_range=4.0, range=1.5)
    anchor = range_anchor(msg, Extrinsic((0, 0, 0), (0.0, -math.sqrt(0.5), 0.0, math.sqrt(0.5))))
    apex, axis, cos_half, r = anchor.checked(DropCounts())
    np.testing.assert_allclose(axis, [0, 0, 1], atol=1e-12)  # the sensor's +x looks along the camera's z
    assert r == 1.5 and cos_half == pytest.approx(math.cos(0.05))
    msg.range = math.inf  # no return: accepted, ignored by the fit
    drops = DropCounts()
    assert range_anchor(msg).checked(drops) is None and drops.out_of_range == 1
    msg.min_range = 5.0
    with pytest.raises(AnchorError, match="min_range"):
        range_anchor(msg)


def test_extrinsic_param_and_transform() -> None:
    assert extrinsic_param([], "anchor_points_extrinsic") is None
    ext = extrinsic_param([1, 2, 3, 0, 0, 0, 1], "anchor_points_extrinsic")
    assert ext is not None and ext.translation == (1.0, 2.0, 3.0)
    with pytest.raises(InputError, match="anchor_points_extrinsic.*quaternion"):
        extrinsic_param([0, 0, 0, 0, 0, 0, 3], "anchor_points_extrinsic")
    with pytest.raises(InputError, match="anchor_range_extrinsic: expected"):
        extrinsic_param([0, 0, 0], "anchor_range_extrinsic")
    t = NS(translation=NS(x=0.5, y=0.0, z=0.0), rotation=NS(x=0.0, y=0.0, z=0.0, w=1.0))
    assert transform_extrinsic(t).translation == (0.5, 0.0, 0.0)
    t.rotation.w = float("nan")
    with pytest.raises(AnchorError, match="transform"):
        transform_extrinsic(t)
