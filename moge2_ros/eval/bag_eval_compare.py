"""``bag-eval --compare``: two prediction bags of one recording evaluated against the same ground truth, side by
side (e.g. ``bag-infer`` without and with metric anchors, issue 14).

Each bag is evaluated by :func:`moge2_ros.eval.bag_eval.evaluate_bag` (one evaluator); this module only picks the
summary rows that answer "did the anchors help": metric AbsRel and δ1 (no alignment: what a robot consumes), the
metric-scale factor ``median(gt / pred)``, the scale flicker (frame-to-frame change of that factor, and of the
published scale) and the share of anchored frames.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

from moge2_ros.eval.bag_eval import BagEvalResult
from moge2_ros.io.writers import write_json

__all__ = ["COMPARE_ROWS", "comparison", "comparison_markdown", "default_label", "write_comparison"]

#: ``(summary key, row title, what it means)`` of the side-by-side table, in order.
COMPARE_ROWS: Final[tuple[tuple[str, str, str], ...]] = (
    ("frames_evaluated", "frames", "frames matched to ground truth and evaluated"),
    ("depth_metric/rel", "metric AbsRel", "mean |pred - gt| / gt without alignment (lower is better)"),
    ("depth_metric/delta1", "metric δ1", "share of pixels within 1.25x of the truth, no alignment (higher is better)"),
    ("scale", "scale error factor", "mean over frames of median(gt / pred): 1 = metric scale right"),
    ("scale_flicker_median", "scale flicker", "median over frames of |log(s_t / s_t-1)|, s = median(gt / pred): "
                                               "frame-to-frame change of the scale error"),
    ("scale_flicker", "scale flicker (mean)", "the same, mean over frames"),
    ("applied_scale_flicker", "applied-scale flicker", "median |Δ log| of the published metric_scale between "
                                                       "frames (it also follows the camera: MoGe-2's affine map has "
                                                       "no fixed normalisation)"),
    ("depth_flicker", "depth flicker", "median |Δ log(pred / gt)| per pixel between frames"),
    ("anchored_fraction", "anchored frames", "share of frames whose scale an anchor set (geometry scale_source)"),
)


def default_label(result: BagEvalResult, fallback: str) -> str:
    """``anchored`` when any evaluated frame's scale came from an anchor, ``network`` when the geometry messages say
    none did, ``fallback`` when they do not say (a bag written before the anchors, or no geometry topic)."""
    if not any("anchored" in r for r in result.per_frame):
        return fallback
    return "anchored" if any(r.get("anchored") for r in result.per_frame) else "network"


def comparison(results: list[tuple[str, BagEvalResult]]) -> dict[str, Any]:
    """The side-by-side record: ``{"labels": [...], "bags": [...], "rows": [{"key", "title", "meaning",
    "values": [...]}]}`` with one value per result (NaN where a bag lacks the quantity)."""
    rows = []
    for key, title, meaning in COMPARE_ROWS:
        values = [result.summary.get(key, math.nan) for _, result in results]
        rows.append({"key": key, "title": title, "meaning": meaning, "values": values})
    return {"labels": [label for label, _ in results], "bags": [r.config.get("pred_bag") for _, r in results],
            "gt_bag": results[0][1].config.get("gt_bag") if results else None, "rows": rows}


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else f"{value:.4f}"
    return str(value)


def comparison_markdown(record: dict[str, Any]) -> str:
    """The side-by-side table of :func:`comparison` as Markdown (one row per quantity, one column per bag)."""
    labels = record["labels"]
    lines = ["| quantity | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for row in record["rows"]:
        lines.append(f"| {row['title']} | " + " | ".join(_cell(v) for v in row["values"]) + " |")
    lines.append("")
    lines.extend(f"- {row['title']}: {row['meaning']}" for row in record["rows"])
    bags = ", ".join(f"{label} = {bag}" for label, bag in zip(labels, record["bags"]))
    lines.append(f"- predictions: {bags}; ground truth: {record['gt_bag']}")
    return "\n".join(lines) + "\n"


def write_comparison(record: dict[str, Any], output_dir: str | Path) -> dict[str, Path]:
    """Write ``comparison.json`` and ``comparison.md`` into ``output_dir``; return the paths by kind."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "comparison.json", record)
    md_path = out / "comparison.md"
    md_path.write_text(comparison_markdown(record), encoding="utf-8")
    return {"comparison": md_path, "comparison_json": json_path}
