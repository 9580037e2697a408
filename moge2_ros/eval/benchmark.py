"""Benchmark evaluation: official MoGe benchmark configs / folders and the project's folder format.

Sources accepted by :func:`load_benchmarks`:

* an official-style config JSON (``configs/eval/all_benchmarks.json`` of the MoGe release):
  ``{name: {"path", "width", "height", "split", "depth_unit", "has_sharp_boundary", "drop_max_depth",
  "subset", ...}}``; relative paths are resolved against the config's folder first, then the working directory.
  An extra key ``"format"`` reads that entry as another dataset format: ``"folder"`` (the project's folder
  format) or ``"sevenscenes"`` (default ``"moge-benchmark"``, the official layout);
* one dataset folder that :func:`moge2_ros.data.open.detect_format` recognises: an official benchmark folder (it
  holds ``.index.txt``, evaluated at its images' own size), a folder-format dataset or a 7-Scenes sequence;
* a folder whose sub-folders are official benchmarks (one benchmark per sub-folder).

Every benchmark is opened by :func:`moge2_ros.data.open.open_dataset`.

:func:`run_benchmarks` predicts every sample with a :class:`~moge2_ros.inference.predictor.Predictor`,
computes the official metrics (:func:`~moge2_ros.eval.metrics.evaluate_geometry`), averages them per benchmark
and over benchmarks (mean of the benchmark means, the official ``key_average``) and writes ``results.json``
and ``results.md``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence

from moge2_ros.errors import DatasetError

__all__ = [
    "BenchmarkSpec",
    "BenchmarkDataset",
    "load_benchmarks",
    "run_benchmarks",
    "markdown_table",
    "TABLE_COLUMNS",
    "BENCHMARK_FORMATS",
]

#: Keys of the official ``EvalDataLoaderPipeline`` that this reader accepts but does not use.
_IGNORED_KEYS = {"num_load_workers", "num_process_workers", "include_segmentation", "include_normal",
                 "depth_to_normal", "max_segments", "min_seg_area"}
_KNOWN_KEYS = {"path", "width", "height", "split", "depth_unit", "has_sharp_boundary", "drop_max_depth", "subset",
               "format"} | _IGNORED_KEYS
#: The dataset formats (:data:`moge2_ros.data.open.FORMATS`) a benchmark may have; a bag needs topics: ``bag-eval``.
BENCHMARK_FORMATS = ("moge-benchmark", "folder", "sevenscenes")

#: Columns of the Markdown table: (metric key, header, factor). rel / delta1 / F1 are shown in percent.
TABLE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("points_metric/rel", "pts metric rel %", 100.0),
    ("points_metric/delta1", "pts metric δ1 %", 100.0),
    ("points_scale_invariant/rel", "pts scale-inv rel %", 100.0),
    ("points_scale_invariant/delta1", "pts scale-inv δ1 %", 100.0),
    ("points_affine_invariant/rel", "pts affine-inv rel %", 100.0),
    ("points_affine_invariant/delta1", "pts affine-inv δ1 %", 100.0),
    ("depth_metric/rel", "depth metric AbsRel %", 100.0),
    ("depth_metric/delta1", "depth metric δ1 %", 100.0),
    ("depth_scale_invariant/rel", "depth scale-inv AbsRel %", 100.0),
    ("depth_scale_invariant/delta1", "depth scale-inv δ1 %", 100.0),
    ("depth_affine_invariant/rel", "depth affine-inv AbsRel %", 100.0),
    ("depth_affine_invariant/delta1", "depth affine-inv δ1 %", 100.0),
    ("disparity_affine_invariant/rel", "disp affine-inv AbsRel %", 100.0),
    ("disparity_affine_invariant/delta1", "disp affine-inv δ1 %", 100.0),
    ("boundary/radius1_f1", "boundary F1 r1 %", 100.0),
    ("boundary/radius2_f1", "boundary F1 r2 %", 100.0),
    ("boundary/radius3_f1", "boundary F1 r3 %", 100.0),
    ("fov_x/mae", "FoV-x err °", 1.0),
    ("coverage", "coverage %", 100.0),
    ("inference_time_s", "time s", 1.0),
)


class _HasPredict(Protocol):
    def predict(self, image: Any, intrinsics: Any = None, fov_x: float | None = None) -> Any: ...


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark: where its data is and how the official evaluation prepares it.

    Attributes:
        name: table row name.
        path: benchmark folder.
        kind: the dataset format, one of :data:`BENCHMARK_FORMATS` (``"moge-benchmark"``: the official layout).
        width, height: the official evaluation view size (None: each image's own size; official layout only).
        split: index file name inside ``path`` (official layout).
        depth_unit: metres per stored depth unit; None = the depth is not metric (official meaning; official
            layout only).
        has_sharp_boundary: compute the boundary F1 (synthetic data with exact depth edges).
        drop_max_depth: depths above this many times the 1 % quantile are dropped (official default 1000).
        subset: evaluate every ``subset``-th sample only.
    """

    name: str
    path: Path
    kind: str = "moge-benchmark"
    width: int | None = None
    height: int | None = None
    split: str = ".index.txt"
    depth_unit: float | None = None
    has_sharp_boundary: bool = False
    drop_max_depth: float = 1000.0
    subset: int | None = None

    def open(self) -> "BenchmarkDataset":
        """The samples of this benchmark (read lazily)."""
        return BenchmarkDataset(self)


class BenchmarkDataset(Sequence[Any]):
    """``Sequence[Sample]`` of one benchmark (every ``subset``-th sample of the dataset
    :func:`~moge2_ros.data.open.open_dataset` opens; official layout: in its evaluation view).
    ``sample.meta["has_sharp_boundary"]`` carries the spec's flag; ``sample.meta["id"]`` is the sample's name."""

    def __init__(self, spec: BenchmarkSpec) -> None:
        from moge2_ros.data.open import open_dataset

        self.spec = spec
        if spec.kind not in BENCHMARK_FORMATS:
            raise DatasetError(f"benchmark {spec.name}: unknown kind {spec.kind!r} (expected one of "
                               f"{', '.join(BENCHMARK_FORMATS)})")
        options: dict[str, Any] = {}
        if spec.kind == "moge-benchmark":
            options = {"split": spec.split, "width": spec.width, "height": spec.height,
                       "depth_unit": spec.depth_unit, "drop_max_depth": spec.drop_max_depth}
        self._dataset = open_dataset(spec.path, spec.kind, **options)
        self._indices = list(range(len(self._dataset)))[:: spec.subset or 1]

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        position = self._indices[index]
        sample = self._dataset[position]
        meta = dict(sample.meta)
        meta.update(id=str(self._dataset.stems[position]), has_sharp_boundary=self.spec.has_sharp_boundary)
        return sample.replace(meta=meta)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]


# ------------------------------------------------------------------------------------------------ loading specs


def _resolve(path_text: str, base: Path) -> Path:
    path = Path(path_text).expanduser()
    if path.is_absolute():
        return path
    return base / path if (base / path).exists() or not path.exists() else path


def _spec_from_config(name: str, cfg: Any, base: Path, where: str) -> BenchmarkSpec:
    if not isinstance(cfg, Mapping):
        raise DatasetError(f"{where}: benchmark '{name}' must be an object, found {type(cfg).__name__}")
    unknown = sorted(set(cfg) - _KNOWN_KEYS)
    if unknown:
        raise DatasetError(f"{where}: benchmark '{name}' has unknown keys {unknown} (known: {sorted(_KNOWN_KEYS)})")
    if "path" not in cfg or not isinstance(cfg["path"], str):
        raise DatasetError(f"{where}: benchmark '{name}' needs a string 'path'")

    def number(key: str, kind: type, default: Any) -> Any:
        value = cfg.get(key, default)
        if value is None or value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise DatasetError(f"{where}: benchmark '{name}': '{key}' must be a positive number, found {value!r}")
        if kind is int and int(value) != value:
            raise DatasetError(f"{where}: benchmark '{name}': '{key}' must be an integer, found {value!r}")
        return kind(value)

    kind = cfg.get("format", "moge-benchmark")
    if kind not in BENCHMARK_FORMATS:
        raise DatasetError(f"{where}: benchmark '{name}': 'format' must be one of {', '.join(BENCHMARK_FORMATS)}, "
                           f"found {kind!r}")
    width, height = number("width", int, None), number("height", int, None)
    if (width is None) != (height is None):
        raise DatasetError(f"{where}: benchmark '{name}': give both 'width' and 'height' or neither")
    path = _resolve(cfg["path"], base)
    if not path.is_dir():
        raise DatasetError(f"{where}: benchmark '{name}': data folder not found: {path}")
    return BenchmarkSpec(
        name=str(name), path=path, kind=kind, width=width, height=height, split=str(cfg.get("split", ".index.txt")),
        depth_unit=number("depth_unit", float, None), has_sharp_boundary=bool(cfg.get("has_sharp_boundary", False)),
        drop_max_depth=number("drop_max_depth", float, 1000.0), subset=number("subset", int, None),
    )


def load_benchmarks(source: str | Path, only: Sequence[str] | None = None) -> list[BenchmarkSpec]:
    """Benchmark specs from a config JSON or a data folder (see the module docstring).

    Args:
        source: ``.json`` config, official benchmark folder, folder of benchmarks, folder-format dataset or
            7-Scenes sequence.
        only: keep these benchmark names (error if one is missing).

    Raises:
        DatasetError: unreadable / malformed config (naming the benchmark and key), missing folders, or a folder
            in none of the known layouts.
    """
    source = Path(source)
    if source.is_file():
        try:
            config = json.loads(source.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DatasetError(f"{source}: cannot read ({exc.strerror or exc})") from None
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{source}: not valid JSON ({exc})") from None
        if not isinstance(config, dict) or not config:
            raise DatasetError(f"{source}: expected a JSON object {{benchmark name: settings}}")
        specs = [_spec_from_config(name, cfg, source.parent, str(source)) for name, cfg in config.items()]
    elif source.is_dir():
        from moge2_ros.data.open import FORMAT_NAMES, detect_format

        try:
            kind = detect_format(source)
        except DatasetError as exc:
            subs = sorted(p for p in source.iterdir() if (p / ".index.txt").is_file())
            if not subs:
                raise DatasetError(f"{source}: neither a benchmark config, a folder of official benchmarks "
                                   f"(sub-folders with .index.txt), nor a dataset ({exc})") from None
            specs = [BenchmarkSpec(name=p.name, path=p) for p in subs]
        else:
            if kind not in BENCHMARK_FORMATS:
                raise DatasetError(f"{source}: a {FORMAT_NAMES[kind]} is no benchmark (evaluate recordings with "
                                   "bag-eval)")
            specs = [BenchmarkSpec(name=source.name, path=source, kind=kind)]
    else:
        raise DatasetError(f"benchmark source not found: {source}")
    if only:
        names = {s.name for s in specs}
        missing = [n for n in only if n not in names]
        if missing:
            raise DatasetError(f"{source}: no benchmark named {missing} (available: {sorted(names)})")
        specs = [s for s in specs if s.name in set(only)]
    return specs


# ------------------------------------------------------------------------------------------------ running


@dataclass
class BenchmarkResult:
    """Metrics of one benchmark: per-sample records, their mean, the skipped samples with reasons."""

    spec: BenchmarkSpec
    samples: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def mean(self) -> dict[str, float]:
        from moge2_ros.eval.metrics import key_average

        return key_average({k: v for k, v in r.items() if k != "id"} for r in self.samples)


def run_benchmarks(
    specs: Sequence[BenchmarkSpec],
    predictor: _HasPredict,
    *,
    oracle: bool = False,
    max_samples: int | None = None,
    progress: bool = True,
    output_dir: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    align_resolution: tuple[int, int] | None = None,
    skip: Sequence[str] = (),
) -> dict[str, Any]:
    """Predict and evaluate every sample of every benchmark.

    Args:
        specs: from :func:`load_benchmarks`.
        predictor: a :class:`Predictor` (anything with ``predict(image, intrinsics=None) -> Geometry``).
        oracle: give the model the ground-truth intrinsics (official "oracle" mode); otherwise it estimates them.
        max_samples: evaluate at most this many samples per benchmark (smoke runs).
        progress: tqdm progress bars on stderr.
        output_dir: when given, write ``results.json`` and ``results.md`` there.
        extra: additional JSON-able fields recorded under ``"run"`` (model, device, ...).
        align_resolution, skip: see :func:`~moge2_ros.eval.metrics.compute_metrics` (default: official 64 x 64,
            every group).

    Returns:
        ``{"benchmarks": {name: {"mean", "count", "skipped", "samples", "spec"}}, "mean": {...}, "run": {...}}``:
        flat metric keys (``"points_metric/rel"``, ...), ``"mean"`` = mean over benchmarks of the benchmark means.
        A sample that cannot be read or evaluated (``Moge2RosError``) is listed under ``skipped`` with its reason.
    """
    from tqdm import tqdm

    from moge2_ros.errors import Moge2RosError
    from moge2_ros.eval.metrics import ALIGN_RESOLUTION, evaluate_geometry, key_average

    align_resolution = tuple(align_resolution or ALIGN_RESOLUTION)

    results: list[BenchmarkResult] = []
    for spec in specs:
        dataset = spec.open()
        count = len(dataset) if max_samples is None else min(len(dataset), max_samples)
        result = BenchmarkResult(spec)
        bar = tqdm(range(count), desc=spec.name, unit="img", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True)
        for i in bar:
            sample_id = str(i)
            try:
                sample = dataset[i]
                sample_id = sample.meta.get("id", sample_id)
                if not sample.valid().any():
                    result.skipped.append({"id": sample_id, "reason": "no valid ground-truth depth"})
                    continue
                start = time.perf_counter()
                geometry = predictor.predict(sample.image, intrinsics=sample.intrinsics if oracle else None)
                elapsed = time.perf_counter() - start
                metrics = evaluate_geometry(geometry, sample, has_sharp_boundary=spec.has_sharp_boundary,
                                            align_resolution=align_resolution, skip=skip)
            except Moge2RosError as exc:
                result.skipped.append({"id": sample_id, "reason": " ".join(str(exc).split())})
                continue
            metrics["inference_time_s"] = elapsed
            result.samples.append({"id": sample_id, **metrics})
        bar.close()
        results.append(result)

    benchmarks = {
        r.spec.name: {
            "mean": r.mean,
            "count": len(r.samples),
            "skipped": r.skipped,
            "spec": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(r.spec).items()},
            "samples": r.samples,
        }
        for r in results
    }
    summary = {
        "benchmarks": benchmarks,
        "mean": key_average(b["mean"] for b in benchmarks.values() if b["count"]),
        "run": {"oracle": oracle, "max_samples": max_samples, "align_resolution": list(align_resolution),
                "skip": list(skip), **(dict(extra) if extra else {})},
    }
    if output_dir is not None:
        write_results(summary, output_dir)
    return summary


def markdown_table(summary: Mapping[str, Any]) -> str:
    """Markdown table: one row per benchmark plus the mean row; columns of :data:`TABLE_COLUMNS` that have a
    value somewhere (rel, δ1 and F1 in percent, FoV error in degrees)."""
    rows = [(name, b["mean"], b["count"]) for name, b in summary["benchmarks"].items()]
    rows.append(("**mean**", summary["mean"], sum(b["count"] for b in summary["benchmarks"].values())))

    def has(key: str) -> bool:
        return any(isinstance(m.get(key), (int, float)) and math.isfinite(m[key]) for _, m, _ in rows)

    columns = [c for c in TABLE_COLUMNS if has(c[0])]
    header = "| benchmark | n | " + " | ".join(c[1] for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for name, m, n in rows:
        cells = []
        for key, _, factor in columns:
            v = m.get(key)
            ok = isinstance(v, (int, float)) and math.isfinite(v)
            cells.append(f"{v * factor:.2f}" if ok else "–")
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(summary: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results.json`` (everything, NaN as null) and ``results.md`` (the table) into ``output_dir``."""
    from moge2_ros.io.writers import write_json

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "results.json", dict(summary))
    skipped = {n: len(b["skipped"]) for n, b in summary["benchmarks"].items() if b["skipped"]}
    text = "# Benchmark results\n\n" + markdown_table(summary)
    text += ("\nrel / AbsRel / δ1 / F1 in percent, FoV-x error in degrees; mean = mean of the benchmark means. "
             "Metrics over ground-truth pixels that have a valid prediction (see `coverage`).\n")
    if skipped:
        text += "\nSkipped samples (see results.json for reasons): " + ", ".join(
            f"{n}: {c}" for n, c in skipped.items()) + "\n"
    md_path = out / "results.md"
    md_path.write_text(text, encoding="utf-8")
    return json_path, md_path
