"""The outputs of ``bag-eval``: ``metrics.json``, ``frames.csv`` and the HTML report (which plots, tables and
explanations go into it)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from moge2_ros.eval.bag_eval import BagEvalResult
from moge2_ros.eval.report import write_html_report
from moge2_ros.eval.report_svg import BarChart, LineChart, Series
from moge2_ros.io.writers import write_json

__all__ = ["build_report", "write_bag_eval_outputs", "SUMMARY_GROUPS"]

#: Summary keys shown first, grouped (everything else goes under "other averages").
SUMMARY_GROUPS: dict[str, tuple[str, ...]] = {
    "frames": ("frames_evaluated", "frames_skipped", "frames_unmatched", "duration_s", "coverage"),
    "metric depth (no alignment)": ("depth_metric/rel", "depth_metric/delta1"),
    "aligned depth": ("depth_scale_invariant/rel", "depth_scale_invariant/delta1", "depth_affine_invariant/rel",
                      "depth_affine_invariant/delta1", "disparity_affine_invariant/rel",
                      "disparity_affine_invariant/delta1"),
    "points": ("points_metric/rel", "points_metric/delta1", "points_scale_invariant/rel",
               "points_scale_invariant/delta1", "points_affine_invariant/rel", "points_affine_invariant/delta1",
               "fov_x/mae", "fov_x/deviation"),
    "metric scale and stability": ("scale", "scale_std", "scale_min", "scale_max", "scale_drift",
                                   "scale_drift_per_min", "scale_flicker", "scale_flicker_median",
                                   "applied_scale_flicker", "depth_flicker", "model_metric_scale", "network_scale",
                                   "anchored_fraction", "inference_ms"),
}

_NOTES = (
    "Frames: predicted depth messages matched one-to-one to ground-truth frames by header stamp within the "
    "tolerance; metrics are taken over ground-truth pixels that also have a valid (finite, positive) prediction "
    "(coverage = their share of the valid ground-truth pixels).",
    "depth_metric: AbsRel = mean |pred - gt| / gt and δ1 = share of pixels with max(pred/gt, gt/pred) < 1.25, "
    "without any alignment (what a robot consumes). depth_scale_invariant / depth_affine_invariant: the same after "
    "the official robust L1 scale (and shift) alignment on a 64x64 subsample with weights 1/gt; "
    "disparity_affine_invariant: least-squares affine fit in disparity. points_*: relative point error "
    "|p - g| / |g| and δ1 = share with |p - g| < 0.25 min(|p|, |g|), metric (xyz shift aligned), scale-invariant and "
    "affine-invariant, as in the official MoGe evaluation. fov_x: horizontal FoV of the predicted camera_info minus "
    "that of the ground-truth camera_info, degrees (0 when bag-infer was given the camera_info).",
    "scale = median(gt / pred) per frame: 1 = correct metric scale, 1.1 = prediction 10 % too small. "
    "scale_drift = relative change of a straight line fitted to the scale over the evaluated time span "
    "(scale_drift_per_min per minute); scale_flicker = |log(scale_t / scale_t-1)| between consecutive evaluated "
    "frames (scale_flicker_median: their median). applied_scale_flicker = median |log(m_t / m_t-1)| of the published "
    "metric_scale m (geometry messages); it also follows the camera, as MoGe-2's affine map has no fixed "
    "normalisation. anchored_fraction = share of frames whose scale a metric anchor set (geometry scale_source; "
    "network_scale is the model's own scale before anchoring).",
    "depth_flicker = median over pixels valid in both frames of |r_t - r_t-1| with r = log(pred / gt) per pixel: "
    "the frame-to-frame change of the depth error (0.01 = 1 %). It compares errors at the same pixel, so camera "
    "motion is compensated only as far as the ground truth follows it; with a static camera it is exact.",
    "Error vs range: AbsRel and mean log(pred/gt) of all evaluated pixels binned by ground-truth depth. "
    "Histogram: log(pred/gt) of all evaluated pixels (clipped at ±0.5).",
)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def build_report(result: BagEvalResult, path: str | Path) -> Path:
    """Write the ``bag-eval`` report of ``result`` to ``path`` (see :func:`write_html_report`)."""
    frames = result.per_frame
    t = [r["time_s"] for r in frames]
    charts: list[LineChart | BarChart] = []

    def series(key: str, name: str, **kw: Any) -> Series:
        return Series(name, t, [r.get(key) for r in frames], **kw)

    charts.append(LineChart("Depth error over time", "time since first evaluated frame (s)", "AbsRel",
                            [series("depth_metric/rel", "metric AbsRel"),
                             series("depth_scale_invariant/rel", "scale-invariant AbsRel", dashed=True)], y_zero=True))
    charts.append(LineChart("δ1 over time", "time (s)", "δ1 (share of pixels)",
                            [series("depth_metric/delta1", "metric δ1"),
                             series("depth_scale_invariant/delta1", "scale-invariant δ1", dashed=True)]))
    scale_series = [series("scale", "median(gt / pred)")]
    if any("model_metric_scale" in r for r in frames):
        first = next((r["model_metric_scale"] for r in frames if _finite(r.get("model_metric_scale"))), None)
        if first:
            scale_series.append(Series("model metric scale (relative to first)", t,
                                       [r.get("model_metric_scale", float("nan")) / first for r in frames],
                                       dashed=True))
    charts.append(LineChart("Metric-scale factor over time (drift)", "time (s)", "scale factor", scale_series))
    charts.append(LineChart("Temporal stability", "time (s)", "frame-to-frame change",
                            [series("depth_flicker", "depth flicker"), series("scale_flicker", "scale flicker",
                                                                              dashed=True)], y_zero=True))
    rb = result.range_bins
    if rb.get("edges"):
        notes = [f"{c} px" for c in rb["count"]]
        charts.append(BarChart("Error vs range", "ground-truth depth (m)", "AbsRel", rb["edges"], rb["abs_rel"], notes))
        charts.append(BarChart("Bias vs range", "ground-truth depth (m)", "mean log(pred / gt)", rb["edges"],
                               rb["log_ratio"], notes, color="#D55E00"))
    hist = result.histograms.get("log_ratio")
    if hist:
        charts.append(BarChart("Per-pixel error histogram (clipped to ±0.5)", "log(pred / gt)", "share of pixels",
                               hist["edges"],
                               hist["fractions"], color="#009E73"))
    rels = [r["depth_metric/rel"] for r in frames if _finite(r.get("depth_metric/rel"))]
    if rels:
        hi = max(rels) * 1.05 or 1.0
        bins = 20
        counts = [0] * bins
        for v in rels:
            counts[min(bins - 1, int(v / hi * bins))] += 1
        charts.append(BarChart("Per-frame AbsRel histogram", "AbsRel", "frames",
                               [hi * i / bins for i in range(bins + 1)], counts, color="#CC79A7"))

    summary = result.summary
    grouped: dict[str, Any] = {}
    used: set[str] = set()
    for group, keys in SUMMARY_GROUPS.items():
        values = {k: summary[k] for k in keys if k in summary}
        used.update(values)
        if values:
            grouped[group] = values
    rest = {k: v for k, v in summary.items() if k not in used}
    if rest:
        grouped["other averages"] = rest
    cfg = result.config
    subtitle = (f"predictions: {cfg.get('pred_bag')} ({cfg.get('pred_depth_topic')}); ground truth: "
                f"{cfg.get('gt_bag')} ({cfg.get('gt_depth_topic') or cfg.get('gt_cloud_topic')})")
    notes = list(_NOTES)
    if result.skipped:
        reasons = sorted({s["reason"] for s in result.skipped})
        notes.append(f"{len(result.skipped)} matched frames were skipped: " + "; ".join(reasons[:5]))
    columns = ["stamp_ns", "time_s", "depth_metric/rel", "depth_metric/delta1", "depth_scale_invariant/rel",
               "depth_affine_invariant/rel", "points_metric/rel", "points_scale_invariant/rel", "fov_x/deviation",
               "coverage", "scale", "scale_flicker", "depth_flicker", "model_metric_scale", "network_scale",
               "scale_source", "inference_ms"]
    present = [c for c in columns if any(c in r for r in frames)]
    return write_html_report(path, "MoGe-2 bag evaluation", grouped, frames, result.images, charts=charts,
                             notes=notes, subtitle=subtitle, columns=present)


def write_bag_eval_outputs(result: BagEvalResult, output_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json`` (everything), ``frames.csv`` (per-frame table) and ``report.html`` into
    ``output_dir``; return the paths by kind."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "metrics.json", {
        "summary": result.summary, "per_frame": result.per_frame, "range_bins": result.range_bins,
        "histograms": result.histograms, "skipped": result.skipped, "config": result.config,
    })
    columns: list[str] = []
    for record in result.per_frame:
        columns.extend(k for k in record if k not in columns)
    csv_path = out / "frames.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in result.per_frame:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                             for k, v in record.items()})
    html_path = build_report(result, out / "report.html")
    return {"report": html_path, "json": json_path, "csv": csv_path}
