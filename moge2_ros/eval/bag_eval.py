"""``moge2-ros bag-eval``: evaluate predicted depth in a rosbag2 recording against ground truth.

Inputs:

* the PREDICTION bag (``bag-infer``'s output, or a recording of ``moge2_node``): ``depth/image`` (32FC1 metres or
  16UC1 mm), ``depth/camera_info`` (the K of that depth image) and optionally ``geometry``
  (``moge2_ros_msgs/MonocularGeometry``: the model's metric scale and inference time);
* the GROUND-TRUTH bag (default: the same bag): the camera image topic, its camera_info and a registered depth
  topic, or a LiDAR ``PointCloud2`` projected through the camera_info (read with
  :class:`moge2_ros.data.bag.BagDataset`; label type B or C).

Predictions are matched to ground-truth frames by header stamp (one-to-one, within a tolerance).  Per frame the
official metrics are computed (:func:`moge2_ros.eval.metrics.compute_metrics`: depth AbsRel / δ1 metric,
scale-invariant and affine-invariant; points; FoV error) over the ground-truth pixels that have a valid prediction,
plus the metric-scale factor ``median(gt / pred)``, the depth flicker against the previous evaluated frame and
the scale flicker.  From the geometry messages come the published (applied) metric scale, the network's own scale
and the scale source (``network`` or the metric anchors that set it, issue 14).  The summary averages the frames
(official ``key_average``) and adds the drift of the scale over time, the median frame-to-frame change of the
applied scale (``applied_scale_flicker``) and the share of anchored frames; everything goes into
``metrics.json``, ``frames.csv`` and a self-contained ``report.html``
(:func:`moge2_ros.eval.bag_eval_report.write_bag_eval_outputs`).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from moge2_ros.errors import DatasetError

__all__ = ["BagEvalConfig", "BagEvalResult", "evaluate_bag", "resolve_topic"]

_OUTPUT_TOPIC_ENDINGS = ("depth/image", "depth/colorized", "normals", "mask")


@dataclass(frozen=True)
class BagEvalConfig:
    """Settings of :func:`evaluate_bag` (the ``bag-eval`` options; depths in metres, times in ms)."""

    pred_bag: Path
    gt_bag: Path | None = None
    gt_depth_topic: str | None = None
    gt_cloud_topic: str | None = None
    gt_camera_info_topic: str | None = None
    cloud_to_camera: Any = None
    pred_depth_topic: str = "depth/image"
    pred_camera_info_topic: str = "depth/camera_info"
    geometry_topic: str | None = "geometry"
    image_topic: str | None = None
    tolerance_ms: float = 5.0
    max_frames: int | None = None
    every: int = 1
    min_depth: float = 0.0
    max_depth: float | None = None
    align_resolution: tuple[int, int] = (64, 64)
    skip: tuple[str, ...] = ()
    sample_images: int = 4


@dataclass
class BagEvalResult:
    """What :func:`evaluate_bag` measured.

    Attributes:
        summary: flat averages of the per-frame metrics plus frame counts, scale statistics and drift.
        per_frame: one record per evaluated frame (``stamp_ns``, ``time_s`` since the first evaluated frame,
            metrics, ``scale``, ``depth_flicker``, ``scale_flicker``, ``model_metric_scale``, ...).
        range_bins: error vs ground-truth range (:meth:`RangeAccumulator.binned`).
        histograms: ``{"log_ratio": {"edges", "fractions"}, ...}`` over all evaluated pixels.
        images: report image rows ``(caption, [(label, rgb)])``.
        skipped: ``{"stamp_ns", "reason"}`` of matched frames that could not be evaluated.
        config: the settings, as strings / numbers.
    """

    summary: dict[str, Any]
    per_frame: list[dict[str, Any]]
    range_bins: dict[str, list[float]]
    histograms: dict[str, dict[str, list[float]]]
    images: list[tuple[str, list[tuple[str, np.ndarray]]]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ topics


def resolve_topic(topics: dict[str, str], name: str, msgtypes: Sequence[str], role: str, where: Path) -> str:
    """The bag topic meant by ``name``: the exact name, else the unique topic ending in ``/<name>`` (so the
    node's relative names work under any namespace).

    Raises:
        DatasetError (BagError): no or several candidates, or the wrong type; the message lists candidates.
    """
    from moge2_ros.bags import BagError

    key = name.strip("/")
    if name in topics or "/" + key in topics:
        topic = name if name in topics else "/" + key
    else:
        hits = [t for t in topics if t.strip("/").endswith("/" + key) or t.strip("/") == key]
        if len(hits) != 1:
            fitting = [f"{t} ({k})" for t, k in topics.items() if k in msgtypes]
            what = "several topics end with" if hits else "no topic"
            raise BagError(f"{where}: {what} {name!r} for the {role}; candidates of a fitting type: "
                           f"{', '.join(fitting) or 'none'}")
        topic = hits[0]
    if topics[topic] not in msgtypes:
        raise BagError(f"{where}: {role} topic {topic} is {topics[topic]}, expected {' or '.join(msgtypes)}")
    return topic


def _guess_image_topic(topics: dict[str, str], exclude: Sequence[str | None], where: Path) -> str:
    from moge2_ros.bags import BagError
    from moge2_ros.bags.typestore import COMPRESSED_IMAGE, IMAGE

    def is_depth_like(topic: str) -> bool:  # e.g. /camera/aligned_depth_to_color/image_raw, /moge2/depth/image
        parts = topic.strip("/").split("/")
        return any(topic.endswith(e) for e in _OUTPUT_TOPIC_ENDINGS) or "depth" in "/".join(parts[-3:-1])

    candidates = [t for t, k in topics.items() if k in (IMAGE, COMPRESSED_IMAGE) and t not in exclude
                  and not is_depth_like(t)]
    raw = [t for t in candidates if not t.endswith("/compressed")]
    pick = raw if len(raw) == 1 else candidates
    if len(pick) != 1:
        raise BagError(f"{where}: cannot tell which topic is the camera image ({', '.join(candidates) or 'none'}); "
                       "give --image-topic")
    return pick[0]


# ------------------------------------------------------------------------------------------------ prediction side


@dataclass
class _PredFrame:
    depth: np.ndarray | None = None
    k: np.ndarray | None = None
    scale: float | None = None
    inference_ms: float | None = None
    estimated: bool | None = None
    source: str | None = None  # geometry's scale_source (None: a bag written before the anchors)
    network_scale: float | None = None


def _pred_stamps(pred_bag: Any, topic: str) -> list[int]:
    stamps = []
    for raw in pred_bag.raw_messages([topic]):
        stamp = pred_bag.stamp_of(raw)
        if stamp is not None:
            stamps.append(stamp)
    return stamps


def _iter_pred_frames(pred_bag: Any, depth_topic: str, info_topic: str | None, geometry_topic: str | None,
                      wanted: set[int]):
    """Yield ``(stamp, _PredFrame)`` for the wanted stamps once depth and intrinsics are both read (streaming;
    a frame whose camera_info is missing is yielded at the end with ``k`` from its geometry message or None)."""
    from moge2_ros.bags.decode import depth_from_msg, k_from_camera_info

    topics = [t for t in (depth_topic, info_topic, geometry_topic) if t]
    pending: dict[int, _PredFrame] = {}
    for message in pred_bag.messages(topics):
        stamp = message.stamp_ns
        if stamp is None or stamp not in wanted:
            continue
        frame = pending.setdefault(stamp, _PredFrame())
        if message.topic == depth_topic:
            frame.depth = depth_from_msg(message.msg)
        elif message.topic == info_topic:
            frame.k = k_from_camera_info(message.msg)
        else:
            geo = message.msg
            frame.scale = float(geo.metric_scale)
            frame.inference_ms = float(geo.inference_ms)
            frame.estimated = bool(geo.intrinsics_estimated)
            if hasattr(geo, "scale_source"):
                frame.source = str(geo.scale_source)
                frame.network_scale = float(geo.network_scale)
            if frame.k is None and info_topic is None:
                frame.k = k_from_camera_info(geo.camera_info)
        if frame.depth is not None and frame.k is not None and (geometry_topic is None or frame.scale is not None):
            yield stamp, pending.pop(stamp)
    for stamp in sorted(pending):
        yield stamp, pending.pop(stamp)


# ------------------------------------------------------------------------------------------------ evaluation


def _display_images(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, valid: np.ndarray
                    ) -> list[tuple[str, np.ndarray]]:
    """RGB, ground truth, prediction (one shared inverse-depth colour scale) and the AbsRel map (0..0.5)."""
    from moge2_ros.io.writers import turbo

    gt_ok = np.isfinite(gt)
    inv = 1.0 / gt[gt_ok] if gt_ok.any() else np.array([1.0])
    lo, hi = np.percentile(inv, [1, 99]) if inv.size else (0.0, 1.0)

    def colour(depth: np.ndarray) -> np.ndarray:
        ok = np.isfinite(depth) & (depth > 0)
        x = np.zeros(depth.shape)
        with np.errstate(divide="ignore", invalid="ignore"):
            x[ok] = np.clip((1.0 / depth[ok] - lo) / ((hi - lo) or 1.0), 0, 1)
        rgb = turbo(0.1 + 0.85 * x)
        rgb[~ok] = 0
        return rgb

    err = np.full(gt.shape, np.nan)
    err[valid] = np.abs(pred[valid] - gt[valid]) / gt[valid]
    err_rgb = turbo(np.clip(np.nan_to_num(err, nan=0.0) / 0.5, 0, 1))
    err_rgb[~valid] = 0
    return [("image", image), ("ground truth depth", colour(gt)), ("predicted depth (same colour scale)", colour(pred)),
            ("AbsRel |pred - gt| / gt (black 0 → red ≥ 0.5)", err_rgb)]


def evaluate_bag(config: BagEvalConfig, progress: bool = True) -> BagEvalResult:
    """Evaluate the predictions of ``config.pred_bag`` against the ground truth (see the module docstring).

    Raises:
        BagError: unreadable bag, missing topics, no prediction matching a ground-truth frame.
    """
    import torch
    from tqdm import tqdm

    from moge2_ros.bags import BagError
    from moge2_ros.bags.reader import open_bag
    from moge2_ros.bags.sync import match_by_stamp, nearest_offset_ns
    from moge2_ros.bags.typestore import CAMERA_INFO, GEOMETRY, IMAGE, POINT_CLOUD2
    from moge2_ros.data.open import open_dataset
    from moge2_ros.eval.bag_eval_stats import (HistogramAccumulator, RangeAccumulator, flicker, frame_scale,
                                               median_log_change, scale_drift)
    from moge2_ros.eval.metrics import compute_metrics, gt_from_sample, key_average
    from moge2_ros.geometry.intrinsics import pixel_to_normalized_intrinsics
    from moge2_ros.geometry.projection import depth_to_points

    if (config.gt_depth_topic is None) == (config.gt_cloud_topic is None):
        raise DatasetError("bag-eval: give exactly one of a ground-truth depth topic or a LiDAR cloud topic")
    gt_path = config.gt_bag or config.pred_bag

    # 1. Topics.
    with open_bag(gt_path) as gt_bag:
        gt_topics = gt_bag.topics
    if config.gt_depth_topic:
        gt_depth_topic = resolve_topic(gt_topics, config.gt_depth_topic, (IMAGE,), "ground-truth depth", gt_path)
        gt_cloud_topic = None
    else:
        gt_depth_topic = None
        gt_cloud_topic = resolve_topic(gt_topics, config.gt_cloud_topic, (POINT_CLOUD2,), "ground-truth cloud",
                                       gt_path)
    with open_bag(config.pred_bag) as pred_bag:
        pred_topics = pred_bag.topics
    pred_depth_topic = resolve_topic(pred_topics, config.pred_depth_topic, (IMAGE,), "predicted depth",
                                     config.pred_bag)
    pred_info_topic = None
    try:
        pred_info_topic = resolve_topic(pred_topics, config.pred_camera_info_topic, (CAMERA_INFO,),
                                        "predicted camera_info", config.pred_bag)
    except BagError:
        pass
    geometry_topic = None
    if config.geometry_topic:
        try:
            geometry_topic = resolve_topic(pred_topics, config.geometry_topic, (GEOMETRY,), "geometry",
                                           config.pred_bag)
        except BagError:
            geometry_topic = None
    if pred_info_topic is None and geometry_topic is None:
        raise BagError(f"{config.pred_bag}: neither a predicted camera_info topic ({config.pred_camera_info_topic}) "
                       f"nor a geometry topic ({config.geometry_topic}): the predicted depth's intrinsics are unknown")
    image_topic = (resolve_topic(gt_topics, config.image_topic, (IMAGE, "sensor_msgs/msg/CompressedImage"),
                                 "camera image", gt_path)
                   if config.image_topic else
                   _guess_image_topic(gt_topics, [gt_depth_topic, pred_depth_topic], gt_path))
    gt_info_topic = (resolve_topic(gt_topics, config.gt_camera_info_topic, (CAMERA_INFO,), "ground-truth camera_info",
                                   gt_path) if config.gt_camera_info_topic else None)

    # 2. Ground-truth frames and the matching.
    dataset = open_dataset(gt_path, format="bag", image_topic=image_topic, depth_topic=gt_depth_topic,
                           cloud_topic=gt_cloud_topic, camera_info_topic=gt_info_topic,
                           tolerance_ms=config.tolerance_ms, cloud_to_camera=config.cloud_to_camera)
    gt_stamps = dataset.stamps_ns
    with open_bag(config.pred_bag) as pred_bag:
        pred_stamps = _pred_stamps(pred_bag, pred_depth_topic)
    tolerance_ns = int(round(config.tolerance_ms * 1e6))
    pairs = match_by_stamp(pred_stamps, gt_stamps, tolerance_ns)
    if not pairs:
        offset = nearest_offset_ns(pred_stamps, gt_stamps)
        raise BagError(f"{config.pred_bag}: no predicted depth ({pred_depth_topic}, {len(pred_stamps)} messages) "
                       f"within {config.tolerance_ms:g} ms of a ground-truth frame of {gt_path} "
                       f"({len(gt_stamps)} frames; nearest offset "
                       f"{'n/a' if offset is None else f'{offset / 1e6:.1f} ms'}); check the bags and topics")
    pairs = sorted(pairs, key=lambda p: pred_stamps[p[0]])[:: config.every]
    if config.max_frames is not None:
        pairs = pairs[: config.max_frames]
    gt_of_pred = {pred_stamps[i]: j for i, j in pairs}
    unmatched = len(pred_stamps) - len(match_by_stamp(pred_stamps, gt_stamps, tolerance_ns))

    # 3. Frames, streamed in the prediction bag's order.
    n = len(pairs)
    show = set(np.linspace(0, n - 1, min(n, config.sample_images)).round().astype(int).tolist()) \
        if config.sample_images > 0 else set()
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    images: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    worst: tuple[float, str, list[tuple[str, np.ndarray]]] | None = None
    ranges = RangeAccumulator()
    hist_log = HistogramAccumulator(-0.5, 0.5, 80)
    previous_ratio: np.ndarray | None = None
    previous_scale: float | None = None
    t0: int | None = None
    bar = tqdm(total=n, desc="bag-eval", unit="frame", file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with open_bag(config.pred_bag) as pred_bag:
        for order, (stamp, frame) in enumerate(_iter_pred_frames(pred_bag, pred_depth_topic, pred_info_topic,
                                                                 geometry_topic, set(gt_of_pred))):
            bar.update(1)
            try:
                sample = dataset[gt_of_pred[stamp]]
            except DatasetError as exc:
                skipped.append({"stamp_ns": stamp, "reason": " ".join(str(exc).split())})
                continue
            if frame.depth is None or frame.k is None:
                skipped.append({"stamp_ns": stamp, "reason": "predicted depth or its camera_info missing"})
                continue
            if frame.depth.shape != sample.depth.shape:
                skipped.append({"stamp_ns": stamp, "reason": f"predicted depth is {frame.depth.shape[::-1]} (W, H), "
                                                             f"ground truth {sample.depth.shape[::-1]}"})
                continue
            gt_depth = sample.depth.copy()
            with np.errstate(invalid="ignore"):
                gt_depth[gt_depth < config.min_depth] = np.nan
                if config.max_depth:
                    gt_depth[gt_depth > config.max_depth] = np.nan
            sample = sample.replace(depth=gt_depth)
            gt = gt_from_sample(sample, has_sharp_boundary=False)
            height, width = frame.depth.shape
            pred_depth = torch.from_numpy(frame.depth)
            with np.errstate(invalid="ignore"):
                pred_ok = np.isfinite(frame.depth) & (frame.depth > 0)
            k_norm = pixel_to_normalized_intrinsics(torch.from_numpy(frame.k), width, height).float()
            pred_points = depth_to_points(torch.nan_to_num(pred_depth, nan=1.0), k_norm)
            n_gt = int(gt["depth_mask"].sum())
            valid = gt["depth_mask"].numpy() & pred_ok
            gt["depth_mask"] = torch.from_numpy(valid)
            if not valid.any():
                skipped.append({"stamp_ns": stamp, "reason": "no pixel with both ground truth and a prediction"})
                continue
            pred = {"depth_metric": pred_depth, "points_metric": pred_points, "intrinsics": k_norm}
            metrics = compute_metrics(pred, gt, align_resolution=config.align_resolution, skip=config.skip)
            assert isinstance(metrics, dict)
            p, g = frame.depth[valid].astype(np.float64), gt_depth[valid].astype(np.float64)
            ratio = np.full(gt_depth.shape, np.nan)
            ratio[valid] = np.log(p / g)
            scale = frame_scale(p, g)
            t0 = stamp if t0 is None else t0
            record: dict[str, Any] = {"stamp_ns": stamp, "time_s": (stamp - t0) / 1e9, **metrics,
                                      "coverage": int(valid.sum()) / n_gt if n_gt else float("nan"),
                                      "scale": scale,
                                      "depth_flicker": flicker(ratio, previous_ratio) if previous_ratio is not None
                                      else float("nan"),
                                      "scale_flicker": abs(math.log(scale / previous_scale))
                                      if previous_scale else float("nan"),
                                      "gt_median_m": float(np.median(g)), "pred_median_m": float(np.median(p))}
            if frame.scale is not None:
                record["model_metric_scale"] = frame.scale
                record["inference_ms"] = frame.inference_ms
                record["intrinsics_estimated"] = frame.estimated
            if frame.source is not None:
                record["scale_source"] = frame.source
                record["anchored"] = frame.source != "network"
                record["network_scale"] = frame.network_scale
            records.append(record)
            ranges.add(p, g)
            hist_log.add(np.log(p / g))
            previous_ratio, previous_scale = ratio, scale
            rel = metrics.get("depth_metric/rel", float("nan"))
            caption = f"frame {len(records) - 1} (stamp {stamp / 1e9:.3f} s): AbsRel {rel:.3f}"
            panels = _display_images(sample.image, gt_depth, frame.depth, valid) if order in show else None
            if panels is not None:
                images.append((caption, panels))
            if config.sample_images > 0 and math.isfinite(rel) and (worst is None or rel > worst[0]):
                worst = (rel, caption, panels or _display_images(sample.image, gt_depth, frame.depth, valid))
    bar.close()
    if not records:
        reasons = "; ".join(sorted({s["reason"] for s in skipped})) or "no frame matched"
        raise BagError(f"{config.pred_bag}: no frame could be evaluated ({reasons})")
    if worst is not None and worst[1] not in [caption for caption, _ in images]:
        images.append((worst[1] + " - the worst frame", worst[2]))

    # 4. Summary.
    per_frame_means = key_average({k: v for k, v in r.items() if k not in ("stamp_ns", "time_s")
                                   and not isinstance(v, (bool, str))} for r in records)
    times = np.array([r["time_s"] for r in records])
    scales = np.array([r["scale"] for r in records])
    summary: dict[str, Any] = {
        "frames_evaluated": len(records),
        "frames_skipped": len(skipped),
        "frames_unmatched": unmatched,
        "duration_s": float(times.max()) if times.size else 0.0,
        **per_frame_means,
        "scale_std": float(np.nanstd(scales)),
        "scale_min": float(np.nanmin(scales)),
        "scale_max": float(np.nanmax(scales)),
        **scale_drift(times, scales),
        "scale_flicker_median": median_log_change(scales),
    }
    if any("model_metric_scale" in r for r in records):
        summary["applied_scale_flicker"] = median_log_change(
            np.array([r.get("model_metric_scale", np.nan) for r in records], dtype=np.float64))
    if any("anchored" in r for r in records):
        summary["anchored_fraction"] = sum(bool(r.get("anchored")) for r in records) / len(records)
    config_record = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(config).items()}
    config_record.update(pred_depth_topic=pred_depth_topic, pred_camera_info_topic=pred_info_topic,
                         geometry_topic=geometry_topic, image_topic=image_topic, gt_depth_topic=gt_depth_topic,
                         gt_cloud_topic=gt_cloud_topic, gt_camera_info_topic=dataset.camera_info_topic,
                         gt_bag=str(gt_path))
    if config_record.get("cloud_to_camera") is not None:
        config_record["cloud_to_camera"] = np.asarray(config.cloud_to_camera).tolist()
    histograms = {"log_ratio": {"edges": hist_log.edges.tolist(), "fractions": hist_log.fractions()}}
    return BagEvalResult(summary=summary, per_frame=records, range_bins=ranges.binned(), histograms=histograms,
                         images=images, skipped=skipped, config=config_record)
