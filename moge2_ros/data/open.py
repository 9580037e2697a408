"""Open any dataset the package reads from a path: :func:`open_dataset` (the one place that decides the format).

Formats, in the order ``format="auto"`` tries them, with what it looks for and the options each takes (an option
given as None takes the reader's default):

* ``"bag"``: a rosbag2 recording, a ``.mcap`` / ``.db3`` file or a folder holding ``metadata.yaml`` or such a
  file (:class:`~moge2_ros.data.bag.BagDataset`); ``image_topic`` (required), exactly one of ``depth_topic``
  (label type B) or ``cloud_topic`` (C), ``camera_info_topic``, ``tolerance_ms``, ``cloud_to_camera``.
* ``"moge-benchmark"``: an official MoGe benchmark folder with ``.index.txt``
  (:class:`~moge2_ros.data.moge_benchmark.MoGeBenchmarkDataset`, samples in the official evaluation view);
  ``split``, ``width``, ``height``, ``depth_unit``, ``drop_max_depth``.
* ``"sevenscenes"``: a 7-Scenes sequence folder, ``frame-NNNNNN.color.jpg``
  (:class:`~moge2_ros.data.sevenscenes.SevenScenesDataset`); ``indices``.
* ``"folder"``: the folder format, ``<stem>.rgb.png|jpg|jpeg`` (:class:`~moge2_ros.data.folder.FolderDataset`);
  no options.

The procedural generator (:class:`~moge2_ros.data.synthetic.SyntheticDataset`) is configured, not opened from a
path.  Every dataset returned has ``len``, integer indexing (a :class:`~moge2_ros.data.sample.Sample`), iteration
and ``stems``: one name per sample (the folder stem, ``frame-NNNNNN``, the zero-padded bag index, the benchmark
index entry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from moge2_ros.data.sample import Dataset
from moge2_ros.errors import DatasetError

__all__ = ["Dataset", "FORMATS", "FORMAT_OPTIONS", "FORMAT_NAMES", "detect_format", "open_dataset"]

#: The formats :func:`open_dataset` reads, in the order ``"auto"`` tries them.
FORMATS: Final[tuple[str, ...]] = ("bag", "moge-benchmark", "sevenscenes", "folder")

#: The keyword options each format takes.
FORMAT_OPTIONS: Final[dict[str, tuple[str, ...]]] = {
    "bag": ("image_topic", "depth_topic", "cloud_topic", "camera_info_topic", "tolerance_ms", "cloud_to_camera"),
    "moge-benchmark": ("split", "width", "height", "depth_unit", "drop_max_depth"),
    "sevenscenes": ("indices",),
    "folder": (),
}

#: A human name of each format, for messages.
FORMAT_NAMES: Final[dict[str, str]] = {
    "bag": "rosbag2 recording",
    "moge-benchmark": "official MoGe benchmark",
    "sevenscenes": "7-Scenes sequence",
    "folder": "folder dataset",
}

_BAG_SUFFIXES: Final[tuple[str, ...]] = (".mcap", ".db3")
_LOOKED_FOR: Final[str] = (
    "a rosbag2 recording (a .mcap / .db3 file, or a folder with metadata.yaml or a .mcap / .db3 file), "
    "an official MoGe benchmark (.index.txt), a 7-Scenes sequence (frame-NNNNNN.color.jpg) and a folder dataset "
    "(<stem>.rgb.png|jpg|jpeg)"
)


def detect_format(path: str | Path) -> str:
    """The format of the dataset at ``path``: one of :data:`FORMATS`, tried in that order (module docstring).

    Only names of files are looked at (nothing is read), so a dataset with a broken layout is still detected and
    its reader names the problem.

    Raises:
        DatasetError: ``path`` does not exist, or is none of the formats (the message lists what was looked for).
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix in _BAG_SUFFIXES:
            return "bag"
        raise DatasetError(f"{path}: not a dataset: a file that is not a .mcap / .db3 recording; looked for "
                           f"{_LOOKED_FOR}")
    from moge2_ros.data.folder import KINDS
    from moge2_ros.data.sevenscenes import FRAME_PATTERN

    names = [p.name for p in path.iterdir() if p.is_file()]
    if "metadata.yaml" in names or any(Path(n).suffix in _BAG_SUFFIXES for n in names):
        return "bag"
    if ".index.txt" in names:
        return "moge-benchmark"
    if any(FRAME_PATTERN.match(n) for n in names):
        return "sevenscenes"
    rgb_suffixes = tuple(f".rgb{ext}" for ext in KINDS["rgb"])
    if any(not n.startswith(".") and n.lower().endswith(rgb_suffixes) for n in names):
        return "folder"
    raise DatasetError(f"{path}: no frames of any dataset kind: looked for {_LOOKED_FOR}")


def open_dataset(path: str | Path, format: str = "auto", **options: Any) -> Dataset:
    """Open the dataset at ``path``; the samples are read on access.

    Args:
        path: a dataset folder or a rosbag2 file (module docstring).
        format: ``"auto"`` (:func:`detect_format`) or one of :data:`FORMATS`.
        **options: the format's options (:data:`FORMAT_OPTIONS`, module docstring), passed to its reader; an option
            given as None takes the reader's default.

    Returns:
        The dataset: ``len(d)``, ``d[i]`` -> :class:`Sample` (image ``(H, W, 3)`` uint8, depth ``(H, W)`` float32
        metres with NaN unknown, ``(3, 3)`` pixel K), iteration, ``d.stems``.

    Raises:
        DatasetError: a missing path, a path of no known format, an unknown format, an option the format does not
            take, a bag without ``image_topic``, or the reader's own error (e.g. :class:`~moge2_ros.bags.BagError`,
            a folder layout error naming the file).
    """
    if format != "auto" and format not in FORMATS:
        raise DatasetError(f"{path}: unknown dataset format {format!r}; expected auto or one of {', '.join(FORMATS)}")
    kind = detect_format(path) if format == "auto" else format
    given = {name: value for name, value in options.items() if value is not None}
    stray = sorted(set(given) - set(FORMAT_OPTIONS[kind]))
    if stray:
        takes = ", ".join(FORMAT_OPTIONS[kind]) or "none"
        raise DatasetError(f"{path}: option {', '.join(stray)} does not apply to a {FORMAT_NAMES[kind]} "
                           f"(format {kind!r} takes: {takes})")
    if kind == "bag":
        from moge2_ros.bags import BagError
        from moge2_ros.data.bag import BagDataset

        image_topic = given.pop("image_topic", None)
        if not image_topic:
            raise BagError(f"{path}: a rosbag2 recording needs image_topic and exactly one of depth_topic "
                           "(registered depth) or cloud_topic (LiDAR)")
        return BagDataset(path, image_topic, **given)
    if kind == "moge-benchmark":
        from moge2_ros.data.moge_benchmark import MoGeBenchmarkDataset

        return MoGeBenchmarkDataset(path, **given)
    if kind == "sevenscenes":
        from moge2_ros.data.sevenscenes import SevenScenesDataset

        return SevenScenesDataset(path, **given)
    from moge2_ros.data.folder import FolderDataset

    return FolderDataset(path)
