"""Image files in, result files out: what ``moge2-ros infer`` does with one image (names, units, the JSON record).

Per image ``<stem>``: ``<stem>_depth.png`` (uint16 millimetres, 0 = invalid), ``<stem>_depth.npy`` (float32 metres,
NaN = invalid; ``<stem>_depth.exr`` instead with ``exr``), ``<stem>_depth_vis.png`` (colour preview),
``<stem>.ply`` (binary point cloud of the valid pixels, metres, optical frame x right / y down / z forward) and
``<stem>.json`` (intrinsics in pixels, fields of view, metric scale, depth range, the model, the conventions).
numpy and the writers are imported inside the functions, so that importing this module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moge2_ros.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from moge2_ros.inference.predictor import Predictor
    from moge2_ros.io.intrinsics import CameraIntrinsics

__all__ = ["ImageOutputs", "infer_image_file", "output_stems", "write_outputs"]


@dataclass(frozen=True)
class ImageOutputs:
    """What :func:`write_outputs` wrote for one image.

    Attributes:
        files: output kind (``depth_png``, ``depth_npy`` or ``depth_exr``, ``depth_vis``, ``ply``, ``json``) ->
            written path.
        meta: the record written to ``<stem>.json`` (see the module docstring).
    """

    files: dict[str, Path]
    meta: dict[str, Any]


def output_stems(files: Sequence[Path]) -> list[str]:
    """Output name stems for ``files``: the file stem, made unique when two inputs share it
    (``a.png`` + ``a.jpg`` -> ``a_png``, ``a_jpg``; same names in different folders get ``_2``, ``_3``, ...)."""
    stems = [f.stem for f in files]
    counts = {s: stems.count(s) for s in stems}
    stems = [f"{f.stem}_{f.suffix[1:].lower()}" if counts[f.stem] > 1 and f.suffix else f.stem for f in files]
    seen: dict[str, int] = {}
    unique = []
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
        unique.append(s if seen[s] == 1 else f"{s}_{seen[s]}")
    return unique


def write_outputs(
    out_dir: Path,
    stem: str,
    image: "np.ndarray",
    result: dict[str, Any],
    *,
    model_source: str,
    image_path: Path,
    write_ply_file: bool = True,
    exr: bool = False,
    inference_time_s: float | None = None,
    camera: dict[str, Any] | None = None,
) -> ImageOutputs:
    """Write the per-image outputs (module docstring) of one prediction.

    Args:
        out_dir: output folder (exists).
        stem: output name stem.
        image: ``(H, W, 3)`` uint8 RGB input image (colours of the point cloud).
        result: ``Geometry.numpy()`` of a batch of one image.
        model_source: the model that predicted, recorded in the JSON.
        image_path: input file, recorded in the JSON.
        write_ply_file: write ``<stem>.ply``.
        exr: write ``<stem>_depth.exr`` instead of ``<stem>_depth.npy`` (needs OpenEXR).
        inference_time_s: recorded in the JSON.
        camera: how a distorted calibration was rectified (recorded as ``camera`` in the JSON), or None.

    Raises:
        InputError: the prediction's size differs from the image's.
    """
    import numpy as np

    from moge2_ros import __version__
    from moge2_ros.io import colorize_depth, write_depth_exr, write_depth_npy, write_depth_png_mm, write_json
    from moge2_ros.io import write_ply, write_rgb_png

    depth = np.asarray(result["depth"][0], dtype=np.float32)
    mask = np.asarray(result["mask"][0], dtype=bool)
    points = np.asarray(result["points"][0], dtype=np.float32)
    normal = result.get("normal")
    normal = None if normal is None else np.asarray(normal[0], dtype=np.float32)
    height, width = image.shape[:2]
    if depth.shape != (height, width):
        raise InputError(f"prediction has size {depth.shape[::-1]}, image has {(width, height)}")
    with np.errstate(invalid="ignore"):
        valid = mask & np.isfinite(depth) & (depth > 0) & np.isfinite(points).all(axis=-1)
    depth = np.where(valid, depth, np.float32(np.nan))

    written: dict[str, Path] = {}
    written["depth_png"] = write_depth_png_mm(out_dir / f"{stem}_depth.png", depth)
    if exr:
        written["depth_exr"] = write_depth_exr(out_dir / f"{stem}_depth.exr", depth)
    else:
        written["depth_npy"] = write_depth_npy(out_dir / f"{stem}_depth.npy", depth)
    written["depth_vis"] = write_rgb_png(out_dir / f"{stem}_depth_vis.png", colorize_depth(depth, valid))
    if write_ply_file:
        normals = None if normal is None else normal[valid]
        written["ply"] = write_ply(out_dir / f"{stem}.ply", points[valid], image[valid], normals)

    k = np.asarray(result["intrinsics"][0], dtype=np.float64)
    valid_depth = depth[valid]
    meta = {
        "image": str(image_path),
        "width": width,
        "height": height,
        "intrinsics": k,
        "fx": k[0, 0],
        "fy": k[1, 1],
        "cx": k[0, 2],
        "cy": k[1, 2],
        "fov_x_deg": float(np.asarray(result["fov_x"])[0]),
        "fov_y_deg": float(np.asarray(result["fov_y"])[0]),
        "intrinsics_estimated": bool(result["intrinsics_estimated"]),
        "metric_scale": float(np.asarray(result["metric_scale"])[0]),
        "num_tokens": int(result["num_tokens"]),
        "valid_pixels": int(valid.sum()),
        "depth_min_m": float(valid_depth.min()) if valid_depth.size else None,
        "depth_median_m": float(np.median(valid_depth)) if valid_depth.size else None,
        "depth_max_m": float(valid_depth.max()) if valid_depth.size else None,
        "has_normals": normal is not None,
        "model": model_source,
        "inference_time_s": inference_time_s,
        "conventions": {
            "frame": "camera optical frame (REP 103): x right, y down, z forward",
            "units": "metres; intrinsics in pixels with pixel centres at integer coordinates; angles in degrees",
            "depth_png": "uint16 millimetres, 0 = invalid, clipped at 65.535 m",
            "depth_float": "float32 metres, NaN = invalid",
        },
        **({"camera": camera} if camera is not None else {}),
        "outputs": {kind: path.name for kind, path in written.items()},
        "moge2_ros_version": __version__,
    }
    written["json"] = out_dir / f"{stem}.json"
    meta["outputs"]["json"] = written["json"].name
    write_json(written["json"], meta)
    return ImageOutputs(files=written, meta=meta)


def infer_image_file(
    predictor: "Predictor",
    path: Path,
    out_dir: Path,
    stem: str,
    *,
    intrinsics: "CameraIntrinsics | None" = None,
    fov_x: float | None = None,
    write_ply_file: bool = True,
    exr: bool = False,
) -> ImageOutputs:
    """Read the image file ``path``, predict its geometry and write the outputs ``out_dir/<stem>*``.

    Args:
        predictor: from :func:`moge2_ros.inference.load_predictor`; its ``model_id`` goes into the JSON.
        path: image file (PNG, JPEG, BMP, TIFF).
        out_dir: output folder (exists).
        stem: output name stem (:func:`output_stems`).
        intrinsics: known camera (pixels); its image size, when it names one, must be the image's, and it must be
            plausible for the image (:meth:`~moge2_ros.io.intrinsics.CameraIntrinsics.matrix_for`).
        fov_x: known horizontal field of view in degrees (when ``intrinsics`` is None).
        write_ply_file, exr: as :func:`write_outputs`.

    Raises:
        InputError: an unreadable image, a non-colour one (a 16-bit / float single-channel depth map or label),
            intrinsics for another image size or implausible for this one.  A calibration with distortion (a ROS
            ``camera_calibration`` YAML with D, R, P) rectifies the image first: the outputs (and the ``intrinsics``
            in the JSON) are those of the rectified pinhole camera, with a ``camera`` record of the rectification.
        OSError: the file system failed.
    """
    from moge2_ros.io import read_image_rgb
    from moge2_ros.io.images import non_colour_reason

    reason = non_colour_reason(path)
    if reason:
        raise InputError(f"{path}: {reason}; infer takes colour (or 8-bit grey) camera images")
    image = read_image_rgb(path, predictor.pixel_limit())
    height, width = image.shape[:2]
    start = time.perf_counter()
    camera = None
    if intrinsics is not None and intrinsics.distorted:
        import torch

        rectified, k_rect, camera = _rectified(predictor, intrinsics, image, str(path))
        geometry = predictor.predict(rectified, intrinsics=k_rect)
        image = (rectified.permute(1, 2, 0) * 255.0).round_().to(torch.uint8).cpu().numpy()  # colours of the PLY
    elif intrinsics is not None:
        geometry = predictor.predict(image, intrinsics=intrinsics.matrix_for(width, height, str(path)))
    elif fov_x is not None:
        geometry = predictor.predict(image, fov_x=fov_x)
    else:
        geometry = predictor.predict(image)
    result = geometry.numpy()
    elapsed = time.perf_counter() - start
    return write_outputs(out_dir, stem, image, result, model_source=str(predictor.model_id), image_path=path,
                         write_ply_file=write_ply_file, exr=exr, inference_time_s=round(elapsed, 4), camera=camera)


def _rectified(predictor: "Predictor", intrinsics: "CameraIntrinsics", image: "np.ndarray", name: str) \
        -> tuple[Any, "np.ndarray", dict[str, Any]]:
    """A distorted calibration's rectified view of ``image``: ``(3, h, w)`` tensor on the predictor's device, its
    pinhole K' (P[:3, :3] of the file, else K) and the JSON record of the rectification.

    Raises:
        InputError: the calibration does not fit the image (size, implausible K / P, bad D / R), OpenCV missing.
    """
    from moge2_ros.io.camera_model import camera_model_from_info
    from moge2_ros.pipeline.rectify import Rectifier

    height, width = image.shape[:2]
    try:
        model = camera_model_from_info(intrinsics.camera_info(), width, height)
        rectifier = Rectifier(model, predictor.device)
    except InputError as exc:
        raise InputError(f"{intrinsics.source} for {name}: {exc}") from None
    record = {"rectified": True, "distortion_model": model.distortion_model, "d": model.d.tolist(),
              "raw_k": model.k.tolist(), "rectified_k": rectifier.k.tolist()}
    return rectifier.rectify(image), rectifier.k, record
