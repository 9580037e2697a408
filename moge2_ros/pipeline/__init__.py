"""From camera frames to published outputs, without ROS: the per-frame pipeline shared by ``moge2_node`` and
``bag-infer``.

* :mod:`.frame`: :class:`~.frame.FramePipeline` (image + optional CameraInfo -> codec payloads of depth,
  camera_info, points, normals, mask, colorized depth and geometry), its :class:`~.frame.FrameConfig`, and
  :func:`~.frame.decode_rgb`, the one decoding of camera image messages.
* :mod:`.rectify`: rectification of distorted cameras (OpenCV maps once per camera, one ``grid_sample`` per frame
  on the inference device) and the way back onto the raw image grid.
* :mod:`.bag_infer`: ``moge2-ros bag-infer``, the pipeline over the images of a rosbag2 recording (resumable,
  atomic output).
* :mod:`.images`: image files in, result files out (``moge2-ros infer``); :mod:`.cli`: the ``infer`` and
  ``bag-infer`` subcommands.

Every name is imported on first use, so that ``moge2-ros --help`` (which imports :mod:`.cli` through this
package) loads neither torch nor ``rosbags``.
"""

from __future__ import annotations

from moge2_ros._lazy import lazy_exports

__all__ = [
    "INTRINSICS_SOURCES",
    "OUTPUT_GRIDS",
    "OUTPUTS",
    "BagInferOptions",
    "BagInferReport",
    "FrameConfig",
    "FrameOutputs",
    "FramePipeline",
    "decode_rgb",
    "run_bag_infer",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **{name: f"{__name__}.frame" for name in ("INTRINSICS_SOURCES", "OUTPUT_GRIDS", "OUTPUTS", "FrameConfig",
                                                  "FrameOutputs", "FramePipeline", "decode_rgb")},
        **{name: f"{__name__}.bag_infer" for name in ("BagInferOptions", "BagInferReport", "run_bag_infer")},
    },
    globals(),
)
