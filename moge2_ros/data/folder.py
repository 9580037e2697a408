"""The folder dataset format: one folder, one set of ``<stem>.<kind>.<ext>`` files per frame.

=====================================  ========  =================================================================
file                                   needed    content
=====================================  ========  =================================================================
``<stem>.rgb.png`` / ``.rgb.jpg``      yes       RGB image (any mode Pillow reads; converted to 8-bit RGB)
``<stem>.depth.npy``                   one of    float32 (H, W) metres along the optical axis; NaN/0/inf unknown
``<stem>.depth.png``                   the       uint16 (H, W) millimetres, 0 unknown
``<stem>.depth.exr``                   three     float32 (H, W) metres (channel Z, Y or R), NaN/0/inf unknown
``<stem>.intrinsics.json``             [1]       pixel K: ``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}`` or
                                                 ``fx/fy/cx/cy`` (+ optional width/height, checked)
``intrinsics.json|yaml|yml``           [1]       the same, for every frame without its own file
``<stem>.mask.png``                    no        uint8 (H, W): 255 = depth valid, anything else unknown
``<stem>.sky.png``                     no        uint8 (H, W): 255 = sky (no geometry), 0 = not sky
``<stem>.normal.npy``                  no        float32 (H, W, 3) unit normals, camera frame, NaN unknown
``<stem>.provenance.png``              no        uint8 (H, W) codes of :data:`~moge2_ros.data.sample.PROVENANCE`
``dataset.yaml``                       no        ``label_type`` (A/B/C, default B), ``is_metric`` (default true),
                                                 ``description`` (free text)
=====================================  ========  =================================================================

[1] each frame needs a per-frame intrinsics file or the dataset-wide one.  Pixel intrinsics follow ROS
``CameraInfo.K`` (pixel centres at integer coordinates).  Hidden files (``.name``) are ignored.

:class:`FolderDataset` checks the file layout when it is created (missing or duplicate depth, orphan files, missing
intrinsics) and the contents of a frame when it is read (unreadable files, sizes, K, value ranges); every
:class:`~moge2_ros.errors.DatasetError` names the bad file.  :func:`write_sample` writes a Sample in this format,
each file atomically (temporary file + rename); reading it back gives the same Sample (exactly for ``npy`` and
``exr`` depth, to the millimetre for ``png``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from moge2_ros.data.sample import Dataset
from moge2_ros.data.sample import LABEL_TYPES, PROVENANCE, Sample, validate_sample
from moge2_ros.errors import DatasetError, InputError, Moge2RosError

__all__ = ["FolderDataset", "write_sample", "list_stems", "DEPTH_FORMATS", "KINDS"]

#: Per-frame file kinds and their accepted extensions.
KINDS: dict[str, tuple[str, ...]] = {
    "rgb": (".png", ".jpg", ".jpeg"),
    "depth": (".npy", ".png", ".exr"),
    "intrinsics": (".json",),
    "mask": (".png",),
    "sky": (".png",),
    "normal": (".npy",),
    "provenance": (".png",),
}
DEPTH_FORMATS = ("npy", "png", "exr")
_DATASET_INTRINSICS = ("intrinsics.json", "intrinsics.yaml", "intrinsics.yml")
_DATASET_KEYS = {"label_type", "is_metric", "description"}
_FRAME_FILE = re.compile(r"^(?P<stem>[^/\\]+)\.(?P<kind>[a-z]+)(?P<ext>\.[A-Za-z]+)$")
_STEM = re.compile(r"^[^./\\][^/\\]*$")


def _root(root: str | Path) -> Path:
    path = Path(root)
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path}: not a directory")
    return path


def _scan(root: Path) -> dict[str, dict[str, Path]]:
    """``{stem: {kind: path}}`` of every per-frame file; raises on duplicates (two depth files, ...)."""
    frames: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _FRAME_FILE.match(path.name)
        if match is None or match["kind"] not in KINDS or match["ext"].lower() not in KINDS[match["kind"]]:
            continue
        files = frames.setdefault(match["stem"], {})
        kind = match["kind"]
        if kind in files:
            raise DatasetError(f"{path}: frame {match['stem']!r} has two {kind} files ({files[kind].name} and "
                               f"{path.name}); keep one")
        files[kind] = path
    return frames


def list_stems(root: str | Path) -> list[str]:
    """Sorted stems of the frames in ``root`` (every ``<stem>.rgb.png|jpg|jpeg``)."""
    return sorted(stem for stem, files in _scan(_root(root)).items() if "rgb" in files)


def _read_yaml_or_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    try:
        if path.suffix == ".json":
            import json

            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error of an untrusted file
        raise DatasetError(f"{path}: not valid {path.suffix[1:].upper()}: {' '.join(str(exc).split())[:200]}") from None


def _read_dataset_yaml(root: Path) -> tuple[str, bool]:
    path = root / "dataset.yaml"
    if not path.exists():
        return "B", True
    data = _read_yaml_or_json(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a mapping, found {type(data).__name__}")
    unknown = set(data) - _DATASET_KEYS
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {sorted(unknown)}; expected {sorted(_DATASET_KEYS)}")
    label_type = data.get("label_type", "B")
    if label_type not in LABEL_TYPES:
        raise DatasetError(f"{path}: label_type must be one of {LABEL_TYPES}, found {label_type!r}")
    is_metric = data.get("is_metric", True)
    if not isinstance(is_metric, bool):
        raise DatasetError(f"{path}: is_metric must be true or false, found {is_metric!r}")
    return label_type, is_metric


def _read_intrinsics(path: Path, width: int, height: int) -> np.ndarray:
    """``(3, 3)`` float64 pixel K from a JSON/YAML file (see :func:`moge2_ros.io.intrinsics.load_intrinsics_file`),
    checking its optional image size against the frame."""
    from moge2_ros.io.intrinsics import load_intrinsics_file

    try:
        cam = load_intrinsics_file(path)
    except InputError as exc:
        raise DatasetError(str(exc).replace(f"--intrinsics-file {path}", str(path), 1)) from None
    if (cam.width is not None and cam.width != width) or (cam.height is not None and cam.height != height):
        raise DatasetError(f"{path}: intrinsics are for a {cam.width}x{cam.height} image, but the RGB image is "
                           f"{width}x{height}")
    try:  # plausible for this frame's size (field of view, principal point): io.plausibility
        return cam.matrix_for(width, height, "the RGB image")
    except InputError as exc:
        raise DatasetError(str(exc)) from None


def _read_mono8(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode != "L":
                raise DatasetError(f"{path}: expected an 8-bit single-channel PNG (mode L), found mode {image.mode}")
            array = np.array(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from None
    if array.shape != shape:
        raise DatasetError(f"{path}: size {array.shape[1]}x{array.shape[0]} does not match the RGB image "
                           f"{shape[1]}x{shape[0]}")
    return array


def _read_exr(path: Path) -> np.ndarray:
    from moge2_ros.io.writers import exr_available

    if not exr_available():
        raise DatasetError(f'{path}: reading EXR depth needs the OpenEXR package (>= 3.3): pip install "moge2_ros[exr]"')
    import OpenEXR

    with OpenEXR.File(str(path)) as exr:
        channels = exr.channels()
        for name in ("Z", "Y", "R", "depth"):
            if name in channels:
                return np.asarray(channels[name].pixels)
        if len(channels) == 1:
            return np.asarray(next(iter(channels.values())).pixels)
        raise DatasetError(f"{path}: expected a depth channel Z, Y or R, found {sorted(channels)}")


def _read_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 metres, NaN where unknown (0, NaN, inf)."""
    from moge2_ros.io.writers import read_depth_png_mm

    ext = path.suffix.lower()
    try:
        if ext == ".png":
            with Image.open(path) as image:
                if image.mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise DatasetError(f"{path}: expected a 16-bit single-channel PNG in millimetres, found mode "
                                       f"{image.mode}")
            depth = read_depth_png_mm(path)
        elif ext == ".npy":
            depth = np.load(path, allow_pickle=False)
        else:
            depth = _read_exr(path)
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoder errors of an untrusted file (Pillow, numpy, OpenEXR)
        raise DatasetError(f"{path}: cannot read depth: {' '.join(str(exc).split())[:200] or type(exc).__name__}"
                           ) from None
    if depth.ndim != 2 or not (np.issubdtype(depth.dtype, np.floating) or np.issubdtype(depth.dtype, np.integer)):
        raise DatasetError(f"{path}: expected an (H, W) depth array, found {depth.dtype} {depth.shape}")
    if depth.shape != shape:
        raise DatasetError(f"{path}: size {depth.shape[1]}x{depth.shape[0]} does not match the RGB image "
                           f"{shape[1]}x{shape[0]}")
    depth = depth.astype(np.float32)
    with np.errstate(invalid="ignore"):
        if (depth < 0).any():
            raise DatasetError(f"{path}: {int((depth < 0).sum())} negative depth values; depth is metres along the "
                               "optical axis (use NaN or 0 for unknown)")
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def _read_normal(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        normal = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy errors of an untrusted file
        raise DatasetError(f"{path}: cannot read normals: {' '.join(str(exc).split())[:200]}") from None
    if normal.shape != shape + (3,) or not np.issubdtype(normal.dtype, np.floating):
        raise DatasetError(f"{path}: expected float normals of shape {shape + (3,)}, found {normal.dtype} "
                           f"{normal.shape}")
    return normal.astype(np.float32)


class FolderDataset(Dataset):
    """The frames of a folder in the format of this module, as :class:`Sample` objects (read on access).

    Args:
        root: the dataset folder.

    Raises:
        DatasetError: the folder is missing, holds no frames, or its layout is broken (a frame without or with
            two depth files, a file of a frame without RGB, a frame without intrinsics, a bad ``dataset.yaml``);
            the message names the file.  Content errors are raised by ``dataset[i]``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = _root(root)
        frames = _scan(self.root)
        for stem, files in frames.items():
            if "rgb" not in files:
                orphan = next(iter(files.values()))
                raise DatasetError(f"{orphan}: belongs to frame {stem!r}, which has no {stem}.rgb.png|jpg")
        self.stems = sorted(frames)
        if not self.stems:
            raise DatasetError(f"dataset folder {self.root}: no frames (expected <stem>.rgb.png|jpg files)")
        self._files = frames
        dataset_wide = [self.root / name for name in _DATASET_INTRINSICS if (self.root / name).is_file()]
        if len(dataset_wide) > 1:
            raise DatasetError(f"{dataset_wide[1]}: two dataset-wide intrinsics files ({dataset_wide[0].name} and "
                               f"{dataset_wide[1].name}); keep one")
        self._intrinsics_file = dataset_wide[0] if dataset_wide else None
        for stem in self.stems:
            files = frames[stem]
            if "depth" not in files:
                raise DatasetError(f"{files['rgb']}: frame {stem!r} has no depth file ({stem}.depth.npy|png|exr)")
            if "intrinsics" not in files and self._intrinsics_file is None:
                raise DatasetError(f"{files['rgb']}: frame {stem!r} has no intrinsics ({stem}.intrinsics.json or a "
                                   f"dataset-wide intrinsics.json|yaml in {self.root})")
        self.label_type, self.is_metric = _read_dataset_yaml(self.root)

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        if isinstance(index, slice):
            raise DatasetError("FolderDataset: slicing is not supported; index one frame at a time")
        return self.load(self.stems[index])

    def files(self, stem: str) -> dict[str, Path]:
        """The files of frame ``stem`` by kind (``rgb``, ``depth``, ...), plus the dataset-wide intrinsics."""
        files = dict(self._files[stem])
        if "intrinsics" not in files and self._intrinsics_file is not None:
            files["intrinsics"] = self._intrinsics_file
        return files

    def load(self, stem: str) -> Sample:
        """Read and check frame ``stem``; raise :class:`DatasetError` naming the bad file."""
        from moge2_ros.io.images import read_image_rgb

        if stem not in self._files:
            raise DatasetError(f"dataset folder {self.root}: no frame {stem!r}")
        files = self.files(stem)
        try:
            image = read_image_rgb(files["rgb"])
        except InputError as exc:
            raise DatasetError(str(exc)) from None
        shape = image.shape[:2]
        depth = _read_depth(files["depth"], shape)
        k = _read_intrinsics(files["intrinsics"], shape[1], shape[0])
        if "mask" in files:
            depth[_read_mono8(files["mask"], shape) != 255] = np.nan
        sky = None
        if "sky" in files:
            sky = _read_mono8(files["sky"], shape) == 255
            conflict = int((sky & np.isfinite(depth)).sum())
            if conflict:
                raise DatasetError(f"{files['sky']}: {conflict} sky pixels have a valid depth in "
                                   f"{files['depth'].name}; sky must have unknown depth")
        normal = _read_normal(files["normal"], shape) if "normal" in files else None
        provenance = None
        if "provenance" in files:
            provenance = _read_mono8(files["provenance"], shape)
            bad = provenance > max(PROVENANCE.values())
            if bad.any():
                raise DatasetError(f"{files['provenance']}: {int(bad.sum())} pixels hold codes outside "
                                   f"{PROVENANCE}")
        sample = Sample(image=image, depth=depth, intrinsics=k, sky=sky, normal=normal, provenance=provenance,
                        label_type=self.label_type, is_metric=self.is_metric, source=str(files["rgb"]),
                        meta={"stem": stem, "root": str(self.root)})
        try:
            return validate_sample(sample)
        except DatasetError as exc:
            raise DatasetError(f"{files['rgb']}: {exc}") from None


# ------------------------------------------------------------------------------------------------------- writing


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` for a hidden temporary file next to ``path`` (same suffix), then rename it."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_mono8(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda tmp: Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8), mode="L").save(
        tmp, format="PNG"))


def _write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_sample(root: str | Path, stem: str, sample: Sample, depth_format: str = "npy",
                 image_format: str = "png", jpeg_quality: int = 95) -> None:
    """Write ``sample`` as frame ``stem`` of the folder dataset ``root`` (created if needed).

    Writes ``<stem>.rgb.png|jpg``, ``<stem>.depth.npy|png|exr``, ``<stem>.intrinsics.json`` and, where the
    sample has them, ``<stem>.sky.png``, ``<stem>.normal.npy``, ``<stem>.provenance.png``; ``dataset.yaml`` is
    created from the sample's ``label_type`` / ``is_metric`` if missing.  Each file is written to a hidden
    temporary file and renamed, so readers never see half-written files.  Existing files of the frame with
    another depth/image format are removed (a frame has one depth file).

    Args:
        depth_format: ``"npy"`` (float32 metres, exact), ``"png"`` (uint16 millimetres; depths are rounded to
            1 mm, valid range 1 mm - 65.535 m), ``"exr"`` (float32 metres; needs OpenEXR).
        image_format: ``"png"`` (lossless) or ``"jpg"``.

    Raises:
        DatasetError: invalid sample, stem or format, intrinsics with skew, or a ``dataset.yaml`` whose
            label_type / is_metric differ from the sample's.
    """
    from moge2_ros.io.writers import MAX_DEPTH_MM_PNG_M, write_depth_exr, write_depth_npy, write_depth_png_mm, \
        write_json

    if not isinstance(stem, str) or not _STEM.match(stem) or _FRAME_FILE.match(f"{stem}.rgb.png") is None:
        raise DatasetError(f"write_sample: bad stem {stem!r} (no path separators, no leading dot)")
    if depth_format not in DEPTH_FORMATS:
        raise DatasetError(f"write_sample: depth_format must be one of {DEPTH_FORMATS}, found {depth_format!r}")
    if image_format not in ("png", "jpg"):
        raise DatasetError(f"write_sample: image_format must be 'png' or 'jpg', found {image_format!r}")
    validate_sample(sample)
    k = np.asarray(sample.intrinsics, dtype=np.float64)
    if k[0, 1] != 0:
        raise DatasetError(f"write_sample ({sample.source or stem}): intrinsics with skew {k[0, 1]} cannot be "
                           "stored in the folder format")
    if depth_format == "png":
        far = np.nanmax(sample.depth) if np.isfinite(sample.depth).any() else 0.0
        if far > MAX_DEPTH_MM_PNG_M:
            raise DatasetError(f"write_sample ({sample.source or stem}): depth up to {far:.1f} m does not fit a "
                               f"16-bit millimetre PNG (max {MAX_DEPTH_MM_PNG_M} m); use depth_format='npy'")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dataset_yaml = root / "dataset.yaml"
    if dataset_yaml.exists():
        label_type, is_metric = _read_dataset_yaml(root)
        if (label_type, is_metric) != (sample.label_type, sample.is_metric):
            raise DatasetError(f"{dataset_yaml}: label_type={label_type}, is_metric={is_metric} but the sample "
                               f"({sample.source or stem}) has label_type={sample.label_type}, "
                               f"is_metric={sample.is_metric}; write it to another folder")
    else:
        _write_text(dataset_yaml, f"label_type: {sample.label_type}\nis_metric: {str(sample.is_metric).lower()}\n")

    def path(kind: str, ext: str) -> Path:
        return root / f"{stem}.{kind}.{ext}"

    try:
        if image_format == "png":
            _atomic(path("rgb", "png"), lambda tmp: Image.fromarray(sample.image).save(tmp, format="PNG"))
        else:
            _atomic(path("rgb", "jpg"), lambda tmp: Image.fromarray(sample.image).save(
                tmp, format="JPEG", quality=int(jpeg_quality)))
        writer = {"npy": write_depth_npy, "png": write_depth_png_mm, "exr": write_depth_exr}[depth_format]
        _atomic(path("depth", depth_format), lambda tmp: writer(tmp, sample.depth))
        cam = {"K": k.tolist(), "width": sample.width, "height": sample.height}
        _atomic(path("intrinsics", "json"), lambda tmp: write_json(tmp, cam))
        if sample.sky is not None:
            _write_mono8(path("sky", "png"), np.where(sample.sky, 255, 0))
        if sample.normal is not None:
            _atomic(path("normal", "npy"), lambda tmp: np.save(tmp, sample.normal.astype(np.float32),
                                                               allow_pickle=False))
        if sample.provenance is not None:
            _write_mono8(path("provenance", "png"), sample.provenance)
    except Moge2RosError as exc:
        raise DatasetError(f"write_sample ({root / stem}): {exc}") from None
    except OSError as exc:
        raise DatasetError(f"write_sample ({root / stem}): {exc.strerror or exc}: {exc.filename or root}") from None
    # One depth and one RGB file per frame: drop those of other formats left by an earlier write.
    for kind, ext in [("depth", e) for e in DEPTH_FORMATS if e != depth_format] + \
                     [("rgb", e) for e in ("png", "jpg", "jpeg") if e != image_format]:
        path(kind, ext).unlink(missing_ok=True)
    for kind, present in (("sky", sample.sky), ("normal", sample.normal), ("provenance", sample.provenance)):
        if present is None:
            for ext in KINDS[kind]:
                path(kind, ext[1:]).unlink(missing_ok=True)
    path("mask", "png").unlink(missing_ok=True)  # validity is in the depth file itself
