"""Datasets: the :class:`~moge2_ros.data.sample.Sample` record, :func:`~moge2_ros.data.open.open_dataset` (opens
any dataset from a path: folder format, 7-Scenes, rosbag2 recording, official MoGe benchmark), the readers, the
synthetic scene generator and the training pipeline (augmentation, tensors).  Reading and writing rosbag2 files
is :mod:`moge2_ros.bags`.

The heavier names (torch-based generator and pipeline) are imported on first use, so that importing this package
(for example to register the ``make-synthetic`` subcommand) stays cheap.
"""

from __future__ import annotations

from moge2_ros._lazy import lazy_exports
from moge2_ros.data.sample import INVALID_LABEL, LABEL_TYPES, PROVENANCE, Sample, validate_sample

_LAZY = {
    "open_dataset": "moge2_ros.data.open",
    "detect_format": "moge2_ros.data.open",
    "FORMATS": "moge2_ros.data.open",
    "Dataset": "moge2_ros.data.sample",
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
    "BagDataset": "moge2_ros.data.bag",
    "MoGeBenchmarkDataset": "moge2_ros.data.moge_benchmark",
    "AugmentConfig": "moge2_ros.data.pipeline",
    "TrainingView": "moge2_ros.data.pipeline",
}

__all__ = ["Sample", "validate_sample", "LABEL_TYPES", "INVALID_LABEL", "PROVENANCE", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
