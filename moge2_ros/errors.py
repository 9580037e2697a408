"""Exception types of moge2_ros.

Every layer raises its own subclass of :class:`Moge2RosError` with a message that says what was expected,
what was found and, where there is one, what to do.  The CLI maps these to one line and a non-zero exit code;
the ROS node logs them and keeps running (bad frames) or stops with one clear message (model loading).
"""

from __future__ import annotations


class Moge2RosError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(Moge2RosError, ValueError):
    """A model configuration (``model_config`` dict or dataclass) is malformed."""


class ModelLoadError(Moge2RosError):
    """A checkpoint cannot be found, read, trusted or matched to its configuration."""


class InputError(Moge2RosError, ValueError):
    """An image, batch or intrinsics argument has the wrong shape, dtype or values."""


class BudgetError(InputError):
    """An image or a setting would take a frame past its memory budget or a size limit (see
    :mod:`moge2_ros.inference.budget`); refused before anything frame-sized is allocated."""


class GeometryError(Moge2RosError, ValueError):
    """A geometry function received inconsistent shapes or values."""


class DatasetError(Moge2RosError, ValueError):
    """A dataset (folder, rosbag, generator config) is malformed; the message names the bad file or field."""


class UsageError(Moge2RosError):
    """A command-line argument is malformed or names a missing input (the CLI exits with status 2)."""
