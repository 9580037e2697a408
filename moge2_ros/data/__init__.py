"""Datasets: the :class:`~moge2_ros.data.sample.Sample` record, the folder format, the synthetic scene generator,
the 7-Scenes reader and the training pipeline (augmentation, tensors).  Rosbag recordings live in
:mod:`moge2_ros.bags`.

The heavier names (torch-based generator and pipeline) are imported on first use, so that importing this package
(for example to register the ``make-synthetic`` subcommand) stays cheap.
"""

from __future__ import annotations

from moge2_ros._lazy import lazy_exports
from moge2_ros.data.sample import LABEL_TYPES, PROVENANCE, Sample, validate_sample

_LAZY = {
    "FolderDataset": "moge2_ros.data.folder",
    "write_sample": "moge2_ros.data.folder",
    "list_stems": "moge2_ros.data.folder",
    "SyntheticConfig": "moge2_ros.data.synthetic",
    "SyntheticDataset": "moge2_ros.data.synthetic",
    "Scene": "moge2_ros.data.synthetic",
    "SceneBuilder": "moge2_ros.data.synthetic",
    "camera_pose": "moge2_ros.data.synthetic",
    "render_scene": "moge2_ros.data.synthetic",
    "sample_scene": "moge2_ros.data.synthetic",
    "SevenScenesDataset": "moge2_ros.data.sevenscenes",
    "AugmentConfig": "moge2_ros.data.pipeline",
    "TrainingView": "moge2_ros.data.pipeline",
}

__all__ = ["Sample", "validate_sample", "LABEL_TYPES", "PROVENANCE", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
