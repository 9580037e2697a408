"""Tests of the room layout ranges of the synthetic generator (moge2_ros.data.synthetic_scene.RoomLayout):
drawn rooms respect them, the defaults keep the original rooms, bad ranges are refused with the field named."""

from __future__ import annotations

import numpy as np
import pytest

from moge2_ros.data.synthetic import RoomLayout, SyntheticConfig, SyntheticDataset, frame_rng, sample_scene
from moge2_ros.data.synthetic_scene import sample_room
from moge2_ros.errors import DatasetError


def test_drawn_rooms_respect_the_layout_ranges() -> None:
    layout = RoomLayout(width=(2.5, 2.6), depth=(14.0, 15.0), height=(2.6, 2.7), boxes=(0, 0),
                        camera_depth=(-0.48, -0.46))
    for i in range(6):
        scene, info = sample_room(frame_rng(11, i), layout=layout)
        w, h, d = info["size"]
        assert 2.5 <= w <= 2.6 and 14.0 <= d <= 15.0 and 2.6 <= h <= 2.7
        assert len(scene.box_centre) == 0
        assert -0.48 * d <= info["camera_xz"][1] <= -0.46 * d
        # Far wall (plane n = (0, 0, -1), offset -d/2) is 0.96-0.98 of the depth ahead of the camera.
        far = -scene.planes[5, 3] - info["camera_xz"][1]
        assert 0.96 * d <= far <= 0.98 * d


def test_deep_sparse_rooms_render_deeper_than_small_cluttered_ones() -> None:
    deep = SyntheticConfig(families=("room",), fov_x_deg=(60, 60), pitch_deg=0.0, yaw_deg=0.0,
                           room_layout={"width": [3.0, 3.0], "depth": [14.0, 14.0], "boxes": [0, 0],
                                        "camera_depth": [-0.45, -0.45]})
    small = SyntheticConfig(families=("room",), fov_x_deg=(60, 60), pitch_deg=0.0, yaw_deg=0.0,
                            room_layout={"width": [3.0, 3.0], "depth": [3.0, 3.0], "boxes": [8, 8],
                                         "camera_depth": [-0.1, -0.1]})
    assert isinstance(deep.room_layout, RoomLayout) and deep.room_layout.boxes == (0, 0)
    pairs = zip(SyntheticDataset(3, 24, 32, seed=2, config=deep), SyntheticDataset(3, 24, 32, seed=2, config=small))
    for a, b in pairs:
        # Level camera looking down the room: the centre pixel sees the far wall (unless a sphere hangs there).
        assert np.nanmax(a.depth) > 11.0 and np.nanmax(b.depth) < 2.0
        assert np.nanmedian(a.depth) > np.nanmedian(b.depth)


def test_default_layout_is_the_original_room_distribution() -> None:
    layout = RoomLayout()
    assert (layout.width, layout.depth, layout.height, layout.boxes) == ((3.0, 8.0), (3.0, 10.0), (2.4, 3.5), (2, 8))
    for i in range(8):
        scene, info = sample_scene(frame_rng(0, i), SyntheticConfig(families=("room",)))
        w, h, d = info["size"]
        assert 3.0 <= w <= 8.0 and 3.0 <= d <= 10.0 and 2.4 <= h <= 3.5
        assert -0.45 * d <= info["camera_xz"][1] <= -0.1 * d
        assert len(scene.box_centre) <= 8  # boxes that find no free spot are dropped


@pytest.mark.parametrize("kwargs, match", [
    ({"width": (5.0, 3.0)}, "RoomLayout.width"),
    ({"depth": (0.5, 3.0)}, "must be >= 1 m"),
    ({"boxes": (-1, 3)}, "RoomLayout.boxes"),
    ({"boxes": (0.5, 3)}, "RoomLayout.boxes"),
    ({"camera_depth": (-0.6, -0.1)}, "camera_depth"),
    ({"height": (2.0, float("nan"))}, "RoomLayout.height"),
])
def test_bad_layout_ranges_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        RoomLayout(**kwargs)


def test_config_refuses_unknown_layout_keys_and_types() -> None:
    with pytest.raises(DatasetError, match="unknown keys.*lenght"):
        SyntheticConfig(room_layout={"lenght": [3, 4]})
    with pytest.raises(DatasetError, match="room_layout: expected a RoomLayout"):
        SyntheticConfig(room_layout=[3, 4])  # type: ignore[arg-type]


def test_training_config_passes_a_layout_to_the_generator(tmp_path) -> None:
    from moge2_ros.train.config import TrainConfigError, load_config

    path = tmp_path / "train.yaml"
    path.write_text("data:\n  train:\n    - kind: synthetic\n      count: 2\n      generator:\n"
                    "        families: [room]\n        room_layout: {depth: [12, 13], boxes: [0, 0]}\n")
    source = load_config(path).data.train[0]
    config = SyntheticConfig(**source.generator)
    assert config.room_layout == RoomLayout(depth=(12.0, 13.0), boxes=(0, 0))
    _, info = sample_scene(frame_rng(0, 0), config)
    assert 12.0 <= info["size"][2] <= 13.0
    path.write_text("data:\n  train:\n    - kind: synthetic\n      generator: {room_layout: {boxes: [3, 1]}}\n")
    with pytest.raises(TrainConfigError, match=r"data\.train\[0\]\.generator: .*RoomLayout\.boxes"):
        load_config(path)
