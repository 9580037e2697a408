"""Training of MoGe-2 models: losses and loss sets of the official recipe, the YAML configuration, the trainer
(single process or ``torchrun`` + DDP), training-state files, and the ``train`` / ``finetune`` CLI.

The robust alignment solvers live in :mod:`moge2_ros.geometry.alignment` and the mask-aware resize in
:mod:`moge2_ros.geometry.resize`; nothing here re-implements them.  No rclpy.

Exports are resolved lazily (PEP 562), so importing ``moge2_ros.train.cli`` to build the command-line parser
does not import torch.
"""

from __future__ import annotations

from moge2_ros._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # losses
    **{name: "moge2_ros.train.losses" for name in (
        "LOSS_SET_LABELS", "LOSS_FUNCTIONS", "OFFICIAL_LOSS_SETS", "LossError", "LossSet", "LossTerm",
        "affine_invariant_global_loss", "affine_invariant_local_loss", "anchor_sampling_weight", "angle_between",
        "compute_instance_losses", "edge_loss", "loss_set_for_label", "mask_bce_loss",
        "metric_scale_loss", "normal_loss", "normal_map_loss", "sample_patch_anchors", "scale_loss_target")},
    # configuration
    **{name: "moge2_ros.train.config" for name in (
        "TrainConfig", "TrainConfigError", "load_config", "config_from_dict", "config_to_dict", "build_loss_sets")},
    # trainer
    **{name: "moge2_ros.train.trainer" for name in ("Trainer", "TrainResult", "train")},
    # training state
    **{name: "moge2_ros.train.state" for name in (
        "TrainingStateError", "find_latest_checkpoint", "load_training_state")},
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
