"""Helpers of the offline metric-anchor tests (``bag-infer --anchor-topic``, ``bag-eval --compare``): bags of the
example room rendered from a moving camera (exact metric depth) with a simulated LiDAR and rangefinder in their own
frames (``/tf_static``), and the bundled demo model, whose metric scale on these frames is about 2x too small
(docs/DEMO_MODEL.md): what the anchors must correct."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from moge2_ros.data.make_bag import AnchorSensors, BagLayout, write_samples_bag
from moge2_ros.data.sample import Sample

#: The demo model's shapes are coarse (AbsRel ~0.2 after an oracle scale): the inlier threshold of the node's
#: ``anchor_inlier_threshold`` raised accordingly (the anchoring's documented advice).
INLIER_THRESHOLD = 0.4


def render_frames(count: int = 5, width: int = 160, height: int = 120) -> list[Sample]:
    """``count`` frames of the example room along a short camera path (moving sideways, up and back)."""
    from moge2_ros.data.example import render_example_scene

    frames = []
    for i in range(count):
        scene = render_example_scene(width, height, camera_position=(0.15 * i - 0.3, 0.05 * i, -0.2 * i))
        frames.append(Sample(image=scene.rgb, depth=scene.depth.astype(np.float32), intrinsics=scene.intrinsics,
                             source=f"example_room/{i}"))
    return frames


def write_anchor_bag(path: Path, frames: list[Sample], **sensors: Any) -> BagLayout:
    """An MCAP bag of ``frames`` (rgb8, camera_info, 32FC1 depth) with the :class:`AnchorSensors` (changed by
    ``sensors``)."""
    return write_samples_bag(path, frames, "mcap", depth_encoding="32FC1", anchors=AnchorSensors(**sensors))


@lru_cache(maxsize=1)
def demo_predictor() -> Any:
    """The bundled demo model in fp32 without normals (one per test session)."""
    from moge2_ros.inference import load_predictor

    return load_predictor(predictor_options())


def predictor_options() -> Any:
    from moge2_ros.assets import model_source
    from moge2_ros.inference import PredictorOptions

    return PredictorOptions(model=model_source(None), precision="fp32", estimate_normals=False)


def infer_options(**changes: Any) -> Any:
    """:class:`BagInferOptions` of the demo model with ``changes``."""
    from moge2_ros.pipeline.bag_infer import BagInferOptions

    return BagInferOptions(predictor_options(), **changes)


def geometries(bag: Path, topic: str = "/moge2/geometry") -> list[Any]:
    """The geometry messages of an output bag, in order."""
    from moge2_ros.bags.reader import open_bag

    with open_bag(bag) as reader:
        return [m.msg for m in reader.messages([topic])]


def scale_errors(bag: Path, frames: list[Sample], topic: str = "/moge2/depth/image") -> np.ndarray:
    """Per frame ``median(gt / pred)`` of the output depth against the rendered truth (1 = metric scale right)."""
    from moge2_ros.bags.decode import depth_from_msg
    from moge2_ros.bags.reader import open_bag

    out = []
    with open_bag(bag) as reader:
        for message, frame in zip(reader.messages([topic]), frames, strict=True):
            depth = depth_from_msg(message.msg)
            ok = np.isfinite(depth) & np.isfinite(frame.depth) & (frame.depth > 0)
            out.append(float(np.median(frame.depth[ok] / depth[ok])))
    return np.array(out)
