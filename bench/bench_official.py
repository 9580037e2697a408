#!/usr/bin/env python3
"""Side-by-side CPU benchmark: the official MoGe-2 code (``dlr-moge`` from PyPI) against moge2_ros, same weights.

Prints a Markdown table to stdout (progress goes to stderr)::

    .venv/bin/python bench/bench_official.py                     # quick default: reference model.pt, 1200 tokens
    .venv/bin/python bench/bench_official.py --configs public vits vitb vitl --tokens 1200 2400 3600   # full run
    .venv/bin/python bench/bench_official.py --setup-only        # only build the benchmark virtualenv

The official code never becomes a dependency of moge2_ros: it is installed into a separate virtualenv
(``--venv``, default ``~/.cache/moge2_ros/bench-official-venv``), built on first use with ``pip`` from PyPI:
the same torch release as this project's venv (``torch==X.Y.Z``, as ``scripts/setup.sh`` installs it, or
``$MOGE2_TORCH_PIP_ARGS``), the same numpy and scipy versions, ``dlr-moge`` and ``dlr-utils3d`` with ``--no-deps``,
and only what the official inference path imports beyond those: ``huggingface_hub`` (imported at the top of
``moge/model/v2.py``) and OpenCV (``cv2``, imported by ``moge/utils/geometry_numpy.py``; the headless wheel, since
nothing on this path opens a window).  dlr-moge's other requirements (gradio, trimesh, torchvision, matplotlib,
dlr-pipeline, ...) serve its apps and training and are not installed.

Design (fairness):

* Two long-lived worker processes, one per implementation: ``<bench venv>/bin/python bench_official.py --worker
  official`` and ``<this python> bench_official.py --worker ours``.  The driver sends them one JSON command per
  line and waits for the answer, so only one of them computes at any time.  Calls alternate: official infer,
  our predict, our infer, then the next repetition in reverse order (and so on), so slow drifts of a shared
  machine hit every method alike.
* Same weights: both load the same official-format ``model.pt``: the reference checkpoint
  (``../shared/reference/public/model.pt``), or, for the ViT-S/B/L v2 configurations (which have no trained
  weights here), a randomly initialised model written once in the official format to ``--weights-dir``.  Raw
  random weights put the whole mask below 0.5 and give a near-constant point map, whose focal / shift problem is
  degenerate; so, as for the demo model, the point head is wired to a pinhole camera and the mask biased to
  valid (:func:`moge2_ros.demo.wire_untrained_model`; the speed does not depend on the values).
* Same input (a 640x480 uint8 RGB noise image, seed 0), same ``torch.set_num_threads``, same token budget, fp32
  (``use_fp16=False``: the official default autocasts to fp16, which is emulated and ~10x slower on CPUs),
  inference mode, warm-up calls excluded.  The official ``MoGeModel.infer`` runs with its other defaults
  (``force_projection=True``, ``apply_mask=True``, no fov) on the (3, H, W) float tensor of the official README;
  ours: ``Predictor.predict`` on the uint8 image (the node's path: conversion, network, focal / shift, metric
  geometry, normals from points for models without a normal head, NaN masking) and ``MoGe2Model.infer`` on the
  same float tensor as the official call.
* Same computation: the first timed call of each method saves its depth, mask and field of view; the table
  reports the depth AbsRel against the official result over the pixels valid in both, the fraction of mask pixels
  that differ and the field-of-view difference.

``--profile`` adds, per configuration, the top operators of one call of each side under ``torch.profiler``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_VENV = Path.home() / ".cache" / "moge2_ros" / "bench-official-venv"
DEFAULT_WEIGHTS = Path.home() / ".cache" / "moge2_ros" / "bench-official-weights"
OFFICIAL_PACKAGES = ("dlr-moge==2.0.0", "dlr-utils3d==1.3")
WIDTH, HEIGHT = 640, 480
# name -> (label, key in moge2_state_dict_spec.json or None for the reference checkpoint)
CONFIGS: dict[str, tuple[str, str | None]] = {
    "public": ("reference model.pt (ViT-S, small heads)", None),
    "vits": ("ViT-S + v2.json decoder (random init)", "vits14_variant"),
    "vitb": ("ViT-B + v2.json decoder (random init)", "vitb14_variant"),
    "vitl": ("ViT-L v2.json (random init)", "vitl14_v2json"),
}
METHODS = ("official_infer", "ours_predict", "ours_infer", "ours_auto")
METHOD_LABEL = {"official_infer": "official infer", "ours_predict": "ours predict", "ours_infer": "ours infer",
                "ours_auto": "ours predict, precision auto"}


# ============================================================================================= worker side
# Runs in either virtualenv: only the standard library at module level (the official venv has no moge2_ros).


def _worker(kind: str) -> int:
    """Serve JSON commands on stdin, one answer line each on stdout (library prints go to stderr)."""
    out = sys.stdout
    sys.stdout = sys.stderr
    os.environ.setdefault("XFORMERS_DISABLED", "1")  # the official DINOv2 code would pick xformers if present
    import numpy as np
    import torch

    state: dict[str, Any] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            answer = _worker_command(kind, cmd, state, np, torch)
        except Exception as exc:  # reported to the driver, which stops with the message
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        if cmd["cmd"] == "quit":
            break
    return 0


def _worker_command(kind: str, cmd: dict[str, Any], state: dict[str, Any], np: Any, torch: Any) -> dict[str, Any]:
    op = cmd["cmd"]
    if op == "hello":
        torch.set_num_threads(cmd["threads"])
        info = {"torch": torch.__version__, "numpy": np.__version__, "threads": torch.get_num_threads(),
                "python": sys.version.split()[0]}
        if kind == "official":
            from importlib.metadata import version

            import scipy

            info.update(moge=version("dlr-moge"), utils3d=version("dlr-utils3d"), scipy=scipy.__version__)
        else:
            import moge2_ros
            from moge2_ros.inference.precision import resolve_precision

            info.update(moge2_ros=moge2_ros.__version__, auto=resolve_precision("auto", torch.device("cpu"))[0])
        return info
    if op == "image":
        image = np.load(cmd["path"])
        state["image_u8"] = image
        # The official README's input, built as it does: (3, H, W) float32 in [0, 1] (a channels-last view).
        state["image_f32"] = torch.tensor(image / 255, dtype=torch.float32).permute(2, 0, 1)
        return {"shape": list(image.shape)}
    if op == "load":
        t0 = time.perf_counter()
        if kind == "official":
            from moge.model.v2 import MoGeModel

            checkpoint = torch.load(cmd["checkpoint"], map_location="cpu", weights_only=True)
            model = MoGeModel(**checkpoint["model_config"])
            # from_pretrained loads with strict=False; check that every weight arrived.
            missing, unexpected = model.load_state_dict(checkpoint["model"], strict=False)
            if missing or unexpected:
                raise RuntimeError(f"official model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        else:
            from moge2_ros.checkpoints import load_model

            model = load_model(cmd["checkpoint"])
        state["model"] = model.eval()
        state.pop("predictor", None)
        return {"load_s": time.perf_counter() - t0, "params": sum(p.numel() for p in model.parameters())}
    if op == "tokens":
        state["tokens"] = cmd["tokens"]
        if kind == "ours":
            from moge2_ros import Predictor

            state["predictor"] = Predictor(state["model"], num_tokens=cmd["tokens"])
            # The node's default path: precision auto (bf16 on a CPU with native bf16, else fp32).
            state["predictor_auto"] = Predictor(state["model"], num_tokens=cmd["tokens"], dtype="auto")
        return {}
    if op == "run":
        fn = _method(kind, cmd["method"], state, torch)
        clock = time.process_time if cmd.get("clock") == "cpu" else time.perf_counter
        with torch.inference_mode():
            t0 = clock()
            result = fn()
            elapsed = clock() - t0
        if cmd.get("save"):
            _save_outputs(cmd["method"], result, cmd["save"], np, torch)
        return {"ms": 1000.0 * elapsed}
    if op == "profile":
        fn = _method(kind, cmd["method"], state, torch)
        from torch.profiler import ProfilerActivity, profile

        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
        rows = []
        for e in prof.key_averages():
            rows.append({"op": e.key, "count": e.count, "self_ms": e.self_cpu_time_total / 1000.0,
                         "total_ms": e.cpu_time_total / 1000.0})
        rows.sort(key=lambda r: -r["self_ms"])
        return {"ms": 1000.0 * elapsed, "ops": rows[: cmd.get("top", 25)]}
    if op == "quit":
        return {}
    raise ValueError(f"unknown command {op!r}")


def _method(kind: str, method: str, state: dict[str, Any], torch: Any):
    model, tokens = state["model"], state["tokens"]
    if method == "official_infer" and kind == "official":
        return lambda: model.infer(state["image_f32"], num_tokens=tokens, use_fp16=False)
    if method == "ours_infer" and kind == "ours":
        return lambda: model.infer(state["image_f32"], num_tokens=tokens, use_fp16=False)
    if method == "ours_predict" and kind == "ours":
        return lambda: state["predictor"].predict(state["image_u8"])
    if method == "ours_auto" and kind == "ours":
        return lambda: state["predictor_auto"].predict(state["image_u8"])
    raise ValueError(f"worker {kind!r} does not run {method!r}")


def _save_outputs(method: str, result: Any, path: str, np: Any, torch: Any) -> None:
    """depth (H, W) float32 (non-finite where invalid), mask (H, W) bool, fov_x (degrees)."""
    if method in ("ours_predict", "ours_auto"):
        depth, mask, fov_x = result.depth[0], result.mask[0], float(result.fov_x[0])
    else:
        depth, mask = result["depth"], result["mask"]
        fx = float(result["intrinsics"][0, 0])
        fov_x = float(np.degrees(2.0 * np.arctan(0.5 / fx)))
    np.savez(path, depth=depth.float().numpy(), mask=mask.numpy(), fov_x=np.float64(fov_x))


# ============================================================================================= driver side


def log(message: str) -> None:
    from _harness import log as harness_log

    harness_log(message)


class Worker:
    """A worker process and its line protocol."""

    def __init__(self, kind: str, python: Path, env: dict[str, str]) -> None:
        self.kind = kind
        self.proc = subprocess.Popen([str(python), str(Path(__file__).resolve()), "--worker", kind],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.kind} worker exited (status {self.proc.wait()}); see its stderr above")
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"{self.kind} worker failed on {cmd['cmd']}: {answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask(cmd="quit")
            except SystemExit:
                pass
            self.proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------- virtualenv


def venv_requirements() -> tuple[list[str], list[str]]:
    """(pinned requirements installed with dependencies, packages installed with --no-deps)."""
    from importlib.metadata import PackageNotFoundError, version

    def pinned(name: str) -> str:
        try:
            return f"{name}=={version(name).split('+')[0]}"
        except PackageNotFoundError:
            return name

    torch_spec = os.environ.get("MOGE2_TORCH_PIP_ARGS") or pinned("torch")
    return [*torch_spec.split(), pinned("numpy"), pinned("scipy"), pinned("huggingface_hub"),
            "opencv-python-headless"], list(OFFICIAL_PACKAGES)


def ensure_venv(venv: Path, base_python: str, allow_build: bool = True) -> Path:
    """Create or reuse the benchmark virtualenv; return its python.  A stamp file records the requirements; when
    they change, the venv is rebuilt."""
    with_deps, no_deps = venv_requirements()
    want = hashlib.sha256(json.dumps([with_deps, no_deps, base_python]).encode()).hexdigest()
    stamp = venv / ".bench_official.stamp"
    python = venv / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    if not allow_build:
        raise SystemExit(f"{venv} is missing or out of date; run without --no-setup to build it")
    log(f"building the benchmark virtualenv {venv} (official MoGe code from PyPI; a few minutes)")
    if venv.exists() and not (venv / "pyvenv.cfg").exists():
        raise SystemExit(f"{venv} exists but is not a virtualenv; move it away or pass --venv")
    subprocess.run([base_python, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    log("pip install " + " ".join(with_deps))
    subprocess.run([*pip, *with_deps], check=True)
    log("pip install --no-deps " + " ".join(no_deps))
    subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    check = ("import os; os.environ['XFORMERS_DISABLED'] = '1'; import moge.model.v2, utils3d; "
             "utils3d.pt.depth_map_to_point_map")
    subprocess.run([str(python), "-c", check], check=True)
    stamp.write_text(want + "\n")
    return python


def base_interpreter() -> str:
    """The interpreter this project's venv was made from (the benchmark venv uses the same Python)."""
    cfg = Path(sys.prefix) / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "executable":
                return value.strip()
    return sys.executable


# --------------------------------------------------------------------------------------------- weights


def checkpoint_for(config: str, weights_dir: Path) -> Path:
    """The official-format model.pt both sides load for ``config`` (random ones are made once, then reused)."""
    from _harness import REFERENCE

    key = CONFIGS[config][1]
    if key is None:
        return REFERENCE / "public" / "model.pt"
    path = weights_dir / f"{config}_seed0_wired.pt"
    if path.exists():
        return path
    import torch

    from moge2_ros.checkpoints import save_checkpoint
    from moge2_ros.demo import wire_untrained_model
    from moge2_ros.model import MoGe2Model

    log(f"writing random official-format weights {path}")
    spec = json.loads((REFERENCE / "moge2_state_dict_spec.json").read_text())
    torch.manual_seed(0)
    with torch.no_grad():
        model = MoGe2Model(spec["configs"][key]["model_config"]).eval()
        wire_untrained_model(model)
    weights_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path)
    return path


# --------------------------------------------------------------------------------------------- measuring


def agreement(ref: Path, other: Path) -> dict[str, float]:
    import numpy as np

    a, b = np.load(ref), np.load(other)
    valid = a["mask"] & b["mask"] & np.isfinite(a["depth"]) & np.isfinite(b["depth"])
    da, db = a["depth"][valid].astype(np.float64), b["depth"][valid].astype(np.float64)
    return {
        "valid_fraction": float(a["mask"].mean()),
        "depth_absrel": float(np.mean(np.abs(db - da) / da)) if da.size else float("nan"),
        "depth_max_rel": float(np.max(np.abs(db - da) / da)) if da.size else float("nan"),
        "mask_differs": float(np.mean(a["mask"] != b["mask"])),
        "fov_x_diff_deg": float(b["fov_x"] - a["fov_x"]),
    }


def measure(config: str, tokens: int, workers: dict[str, Worker], args: argparse.Namespace,
            checkpoint: Path, tmp: Path) -> dict[str, Any]:
    for w in workers.values():
        w.ask(cmd="tokens", tokens=tokens)
    owner = {"official_infer": workers["official"], "ours_predict": workers["ours"], "ours_infer": workers["ours"],
             "ours_auto": workers["ours"]}
    for _ in range(args.warmup):
        for m in METHODS:
            owner[m].ask(cmd="run", method=m, clock=args.clock)
    samples: dict[str, list[float]] = {m: [] for m in METHODS}
    saved: dict[str, Path] = {}
    load = [os.getloadavg()[0]]
    for rep in range(args.repeats):
        order = METHODS if rep % 2 == 0 else METHODS[::-1]
        for m in order:
            save = None
            if rep == 0:
                saved[m] = tmp / f"{config}_{tokens}_{m}.npz"
                save = str(saved[m])
            samples[m].append(owner[m].ask(cmd="run", method=m, save=save, clock=args.clock)["ms"])
        load.append(os.getloadavg()[0])
        log(f"{config} @ {tokens}: rep {rep + 1}/{args.repeats}: "
            + ", ".join(f"{METHOD_LABEL[m]} {samples[m][-1]:.0f} ms" for m in METHODS))
    row: dict[str, Any] = {"config": config, "tokens": tokens, "checkpoint": str(checkpoint), "clock": args.clock,
                           "threads": args.threads, "samples_ms": samples, "load1": [min(load), max(load)]}
    row["median_ms"] = {m: statistics.median(s) for m, s in samples.items()}
    row["min_ms"] = {m: min(s) for m, s in samples.items()}
    row["agreement"] = {m: agreement(saved["official_infer"], saved[m]) for m in ("ours_predict", "ours_infer",
                                                                                 "ours_auto")}
    if args.profile:
        row["profile"] = {m: owner[m].ask(cmd="profile", method=m, top=args.profile_top) for m in METHODS}
    return row


# --------------------------------------------------------------------------------------------- report


def print_report(rows: list[dict[str, Any]], info: dict[str, Any], versions: dict[str, dict[str, Any]],
                 args: argparse.Namespace) -> None:
    from _harness import machine_line

    off, ours = versions["official"], versions["ours"]
    print("## Official MoGe-2 code vs moge2_ros (bench/bench_official.py)\n")
    print(f"- command: `{info['command']}`")
    print(f"- machine: {machine_line(info)}; load average at start "
          f"{'/'.join(f'{x:.2f}' for x in info['loadavg_start'])}")
    print(f"- official: dlr-moge {off['moge']}, dlr-utils3d {off['utils3d']}, torch {off['torch']}, "
          f"numpy {off['numpy']}, scipy {off['scipy']} ({off['threads']} threads); ours: moge2_ros "
          f"{ours['moge2_ros']}, torch {ours['torch']}, numpy {ours['numpy']} ({ours['threads']} threads)")
    clock = "wall-clock time" if args.clock == "wall" else "CPU time of the worker process (all threads)"
    print(f"- input {WIDTH}x{HEIGHT} uint8 RGB noise (seed 0), fp32, batch 1; {args.warmup} warm-up call(s) per "
          f"method, then {args.repeats} timed calls per method, interleaved; {clock}; date {info['date']}\n")
    print("| config | tokens | official infer ms | ours predict ms | ours infer ms | official / ours predict "
          "| official / ours infer | depth AbsRel predict | depth AbsRel infer | mask differs | fov Δ deg | valid "
          "| load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        med, agr = r["median_ms"], r["agreement"]
        fp32 = ("ours_predict", "ours_infer")
        worst_mask = max(agr[m]["mask_differs"] for m in fp32)
        worst_fov = max((agr[m]["fov_x_diff_deg"] for m in fp32), key=abs)
        print(f"| {r['config']} | {r['tokens']} | {med['official_infer']:,.0f} | {med['ours_predict']:,.0f} "
              f"| {med['ours_infer']:,.0f} | **{med['official_infer'] / med['ours_predict']:.2f}** "
              f"| **{med['official_infer'] / med['ours_infer']:.2f}** | {agr['ours_predict']['depth_absrel']:.1e} "
              f"| {agr['ours_infer']['depth_absrel']:.1e} | {worst_mask:.1e} | {worst_fov:+.1e} "
              f"| {agr['ours_infer']['valid_fraction']:.2f} | {r['load1'][0]:.1f}–{r['load1'][1]:.1f} |")
    print()
    print(f"The node's default path (`Predictor.predict`, precision auto = {versions['ours'].get('auto', '?')} "
          "here) against the official fp32 `infer`, same calls interleaved:\n")
    print("| config | tokens | official infer ms | ours auto ms | official / ours auto | depth AbsRel auto vs official "
          "| mask differs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        med, agr = r["median_ms"], r["agreement"]["ours_auto"]
        print(f"| {r['config']} | {r['tokens']} | {med['official_infer']:,.0f} | {med['ours_auto']:,.0f} "
              f"| **{med['official_infer'] / med['ours_auto']:.2f}** | {agr['depth_absrel']:.1e} "
              f"| {agr['mask_differs']:.1e} |")
    print()
    print("Medians of the timed calls; ratio > 1 = ours faster. AbsRel = mean |d - d_official| / d_official over the "
          "pixels valid in both; mask differs = fraction of pixels whose validity differs from the official mask "
          "(worst of our two methods); fov Δ = our horizontal field of view minus the official one (worst); valid = "
          "fraction of valid pixels in the official output; load = 1-min load average range during the row (our own "
          "run accounts for about the thread count). Configs: "
          + "; ".join(f"`{k}` = {CONFIGS[k][0]}" for k in dict.fromkeys(r["config"] for r in rows)) + ".\n")
    for r in rows:
        if "profile" not in r:
            continue
        print(f"### Profile: {r['config']} @ {r['tokens']} tokens (one call each, torch.profiler, self CPU ms)\n")
        for m in METHODS:
            p = r["profile"][m]
            print(f"{METHOD_LABEL[m]} — {p['ms']:.0f} ms under the profiler: "
                  + ", ".join(f"{o['op']} {o['self_ms']:.1f} ({o['count']})" for o in p["ops"]) + "\n")


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["public"],
                   help="models to compare (default: public; full run: public vits vitb vitl)")
    p.add_argument("--tokens", nargs="+", type=int, default=[1200],
                   help="token budgets (default: 1200; full run: 1200 2400 3600)")
    p.add_argument("--repeats", type=int, default=6, help="timed calls per method and configuration (default 6)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per method first (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads on both sides (default: the usable CPUs)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: elapsed time (default); cpu: the worker's CPU time (all its threads), which other "
                        "processes on a busy machine disturb much less, best with --threads 1")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"benchmark virtualenv (default {DEFAULT_VENV})")
    p.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS,
                   help=f"where the random official-format checkpoints are written once (default {DEFAULT_WEIGHTS})")
    p.add_argument("--setup-only", action="store_true", help="build / check the benchmark virtualenv, then stop")
    p.add_argument("--no-setup", action="store_true", help="fail instead of building a missing virtualenv")
    p.add_argument("--profile", action="store_true", help="also profile one call per method (torch.profiler)")
    p.add_argument("--profile-top", type=int, default=15, help="operators listed per profile (default 15)")
    p.add_argument("--json", metavar="OUT", type=Path, default=None, help="also write every sample to this JSON file")
    p.add_argument("--worker", choices=["official", "ours"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return _worker(args.worker)
    from _harness import machine_info

    python = ensure_venv(args.venv.expanduser(), base_interpreter(), allow_build=not args.no_setup)
    if args.setup_only:
        print(f"benchmark virtualenv ready: {python}")
        return 0
    threads = args.threads = args.threads or len(os.sched_getaffinity(0))
    import numpy as np

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "XFORMERS_DISABLED": "1", "HF_HUB_OFFLINE": "1"}
    info = machine_info("cpu", threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_official_") as tmp_name:
        tmp = Path(tmp_name)
        image_path = tmp / "image.npy"
        np.save(image_path, np.random.default_rng(0).integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8))
        workers = {"official": Worker("official", python, env), "ours": Worker("ours", Path(sys.executable), env)}
        try:
            versions = {k: w.ask(cmd="hello", threads=threads) for k, w in workers.items()}
            for w in workers.values():
                w.ask(cmd="image", path=str(image_path))
            for config in args.configs:
                checkpoint = checkpoint_for(config, args.weights_dir.expanduser())
                for kind, w in workers.items():
                    loaded = w.ask(cmd="load", checkpoint=str(checkpoint))
                    log(f"{kind}: {config} loaded in {loaded['load_s']:.1f} s "
                        f"({loaded['params'] / 1e6:.1f} M parameters)")
                for tokens in args.tokens:
                    rows.append(measure(config, tokens, workers, args, checkpoint, tmp))
        finally:
            for w in workers.values():
                w.close()
    print_report(rows, info, versions, args)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "versions": versions, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
