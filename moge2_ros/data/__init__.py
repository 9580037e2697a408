"""Datasets: the :class:`~moge2_ros.data.sample.Sample` record, the folder format, the synthetic scene generator
and the training pipeline (augmentation, tensors).  Rosbag recordings live in :mod:`moge2_ros.bags`."""

from moge2_ros.data.sample import LABEL_TYPES, PROVENANCE, Sample, validate_sample

__all__ = ["Sample", "validate_sample", "LABEL_TYPES", "PROVENANCE"]
