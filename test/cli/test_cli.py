"""Tests of the ``moge2-ros`` command line: in-process through ``main([...])`` plus a console-script smoke test.

The model is ``tiny_model_path`` (test/conftest.py: the untrained demo model, a random-init ``MoGe2Config.tiny()``
checkpoint written to a temporary folder): outputs are meaningless but must be complete and mutually consistent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import moge2_ros
import moge2_ros.cli as cli
from _paths import REPO
from moge2_ros.assets import demo_model_path
from moge2_ros.cli import main
from moge2_ros.data.example import render_example_scene
from moge2_ros.errors import InputError
from moge2_ros.io import exr_available, read_ply
from moge2_ros.io.intrinsics import load_intrinsics_file, parse_intrinsics_arg
from moge2_ros.pipeline.images import output_stems

FAST = ["--resolution-level", "0", "--quiet"]


@pytest.fixture(scope="module")
def scene_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("images") / "room.png"
    assert main(["make-example-image", "--output", str(path), "--width", "96", "--height", "72"]) == 0
    return path


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def _assert_one_line_error(stderr: str, *needles: str) -> None:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("moge2-ros: error: ")
    for needle in needles:
        assert needle in lines[0]


def _check_outputs(out: Path, stem: str, *, ply: bool = True) -> dict:
    """All outputs of one image exist and agree with each other; returns the JSON metadata."""
    depth_png, depth_npy = out / f"{stem}_depth.png", out / f"{stem}_depth.npy"
    vis, ply_path, meta_path = out / f"{stem}_depth_vis.png", out / f"{stem}.ply", out / f"{stem}.json"
    for path in (depth_png, depth_npy, vis, meta_path):
        assert path.is_file(), path
    assert ply_path.is_file() == ply

    meta = json.loads(meta_path.read_text())
    h, w = meta["height"], meta["width"]
    k = np.array(meta["intrinsics"])
    assert k.shape == (3, 3) and k[2, 2] == 1 and k[0, 1] == 0
    assert (meta["fx"], meta["fy"], meta["cx"], meta["cy"]) == (k[0, 0], k[1, 1], k[0, 2], k[1, 2])
    # Consistency only: an untrained model may estimate nonsense (even negative) focal lengths.
    assert np.isclose(meta["fov_x_deg"], np.degrees(2 * np.arctan(w / (2 * meta["fx"]))), rtol=1e-4)
    assert np.isclose(meta["fov_y_deg"], np.degrees(2 * np.arctan(h / (2 * meta["fy"]))), rtol=1e-4)
    if not meta["intrinsics_estimated"]:
        assert meta["fx"] > 0 and meta["fy"] > 0 and 0 < meta["fov_x_deg"] < 180
    assert isinstance(meta["intrinsics_estimated"], bool) and isinstance(meta["num_tokens"], int)
    assert np.isfinite(meta["metric_scale"])

    depth = np.load(depth_npy)
    assert depth.dtype == np.float32 and depth.shape == (h, w)
    valid = np.isfinite(depth)
    assert (depth[valid] > 0).all()
    assert meta["valid_pixels"] == int(valid.sum()) > 0  # the test models predict "valid" almost everywhere

    with Image.open(depth_png) as image:
        mm = np.asarray(image).astype(np.int64)
    assert mm.shape == (h, w)
    assert (mm[~valid] == 0).all()
    expected = np.clip(np.rint(depth[valid].astype(np.float64) * 1000), 1, 65535)
    np.testing.assert_array_equal(mm[valid], expected)

    with Image.open(vis) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape == (h, w, 3)
    assert (rgb[~valid] == 0).all()

    if ply:
        vertices = read_ply(ply_path)
        assert len(vertices) == int(valid.sum())
        np.testing.assert_allclose(vertices["z"], depth[valid], rtol=1e-5)
        names = vertices.dtype.names
        assert {"x", "y", "z", "red", "green", "blue"} <= set(names)
        assert ("nx" in names) == meta["has_normals"]
    return meta


# ------------------------------------------------------------------------------------------------ infer


def test_infer_single_image_writes_consistent_outputs(tmp_path: Path, tiny_model_path: Path, scene_image: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(out),
                 "--resolution-level", "0"]) == 0
    captured = capsys.readouterr()
    assert "room_depth.png" in captured.out
    meta = _check_outputs(out, "room")
    assert (meta["width"], meta["height"]) == (96, 72)
    assert meta["intrinsics_estimated"] is True
    assert meta["model"] == str(tiny_model_path)
    assert meta["image"] == str(scene_image)


def test_infer_with_given_intrinsics_passes_them_through(tmp_path: Path, tiny_model_path: Path,
                                                         scene_image: Path) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(out),
                 "--intrinsics", "80,82,47.5,35.5", *FAST]) == 0
    meta = _check_outputs(out, "room")
    assert meta["intrinsics_estimated"] is False
    np.testing.assert_allclose([meta["fx"], meta["fy"], meta["cx"], meta["cy"]], [80, 82, 47.5, 35.5], rtol=1e-5)


def test_infer_with_fov_and_options(tmp_path: Path, tiny_model_path: Path, scene_image: Path) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(out), "--fov-x", "60",
                 "--num-tokens", "1200", "--edge-rtol", "0.05", "--no-ply", "--quiet"]) == 0
    meta = _check_outputs(out, "room", ply=False)
    assert meta["intrinsics_estimated"] is False
    assert meta["fov_x_deg"] == pytest.approx(60.0, abs=1e-3)


@pytest.mark.parametrize("kind", ["json", "own-json", "yaml", "txt9", "txt4"])
def test_infer_with_intrinsics_file(tmp_path: Path, tiny_model_path: Path, scene_image: Path, kind: str) -> None:
    fx, fy, cx, cy = 90.0, 91.0, 47.0, 36.0
    k = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
    if kind == "json":
        path = tmp_path / "K.json"
        path.write_text(json.dumps({"K": k, "width": 96, "height": 72}))
    elif kind == "own-json":  # the metadata written by infer itself
        path = tmp_path / "meta.json"
        path.write_text(json.dumps({"intrinsics": k, "width": 96, "height": 72, "fx": fx}))
    elif kind == "yaml":  # ROS camera_calibration format
        path = tmp_path / "camera.yaml"
        path.write_text(f"image_width: 96\nimage_height: 72\ncamera_name: cam\ncamera_matrix:\n  rows: 3\n"
                        f"  cols: 3\n  data: [{fx}, 0, {cx}, 0, {fy}, {cy}, 0, 0, 1]\n")
    elif kind == "txt9":
        path = tmp_path / "K.txt"
        path.write_text("# camera matrix\n" + "\n".join(" ".join(map(str, row)) for row in k) + "\n")
    else:
        path = tmp_path / "K.txt"
        path.write_text(f"{fx}, {fy}, {cx}, {cy}\n")
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(out),
                 "--intrinsics-file", str(path), *FAST]) == 0
    meta = _check_outputs(out, "room")
    np.testing.assert_allclose([meta["fx"], meta["fy"], meta["cx"], meta["cy"]], [fx, fy, cx, cy], rtol=1e-5)


def test_infer_intrinsics_for_other_image_size_is_reported(tmp_path: Path, tiny_model_path: Path, scene_image: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "K.json"
    path.write_text(json.dumps({"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480}))
    rc = main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(tmp_path / "out"),
               "--intrinsics-file", str(path), *FAST])
    assert rc == 1
    _assert_one_line_error(capsys.readouterr().err, "640x480", "96x72")


def test_infer_folder_skips_unreadable_image(tmp_path: Path, tiny_model_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    scene = render_example_scene(64, 48)
    Image.fromarray(scene.rgb).save(folder / "b_frame.png")
    Image.fromarray(scene.rgb[:, ::-1]).save(folder / "a_frame.jpg", quality=90)
    Image.fromarray(scene.rgb).save(folder / "a_frame.png")  # same stem as the jpg
    (folder / "c_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["infer", str(folder), "--model", str(tiny_model_path), "--output", str(out), "--resolution-level", "0"])
    captured = capsys.readouterr()
    assert rc == 1
    errors = _error_lines(captured.err)
    assert len(errors) == 1 and "c_corrupt.png" in errors[0] and errors[0].startswith("moge2-ros: error: ")
    assert "Traceback" not in captured.err
    for stem in ("a_frame_jpg", "a_frame_png", "b_frame"):
        _check_outputs(out, stem)
    assert not list(out.glob("c_corrupt*")) and not list(out.glob("notes*"))
    assert "3 of 4 images processed" in captured.out


def test_infer_folder_skips_depth_maps_and_a_named_depth_map_is_an_error(tmp_path: Path, tiny_model_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    scene = render_example_scene(64, 48)
    Image.fromarray(scene.rgb).save(folder / "frame.png")
    Image.fromarray(np.full((48, 64), 8, np.uint8)).save(folder / "grey.png")  # 8-bit grey: a mono camera image
    depth_mm = np.clip(np.nan_to_num(scene.depth) * 1000, 0, 65535).astype(np.uint16)
    Image.fromarray(depth_mm).save(folder / "gt_0001.png")  # single-channel uint16
    assert Image.open(folder / "gt_0001.png").mode.startswith("I")
    out = tmp_path / "out"
    rc = main(["infer", str(folder), "--model", str(tiny_model_path), "--output", str(out), *FAST])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    notes = [line for line in captured.err.splitlines() if "gt_0001.png" in line]
    assert len(notes) == 1 and "skipping" in notes[0] and "16-bit" in notes[0] and "error" not in notes[0], notes
    _check_outputs(out, "frame")
    assert (out / "grey.json").is_file() and not (out / "gt_0001.json").exists()

    rc = main(["infer", str(folder / "gt_0001.png"), "--model", str(tiny_model_path), "--output", str(out),
               *FAST])
    captured = capsys.readouterr()
    assert rc == 1
    _assert_one_line_error(captured.err, "gt_0001.png", "single-channel 16-bit", "not a camera image")

    only_depth = tmp_path / "depth_only"
    only_depth.mkdir()
    Image.fromarray(depth_mm).save(only_depth / "d.png")
    rc = main(["infer", str(only_depth), "--model", str(tiny_model_path), "--output", str(out), *FAST])
    assert rc == 2
    assert "no colour images in folder" in capsys.readouterr().err


def test_infer_folder_all_good_exits_zero(tmp_path: Path, tiny_model_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, size in enumerate([(64, 48), (48, 64)]):
        Image.fromarray(render_example_scene(*size).rgb).save(folder / f"img{i}.png")
    out = tmp_path / "out"
    assert main(["infer", str(folder), "--model", str(tiny_model_path), "--output", str(out), *FAST]) == 0
    assert _check_outputs(out, "img1")["width"] == 48


def test_exr_without_openexr_is_a_usage_error(tmp_path: Path, tiny_model_path: Path, scene_image: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import moge2_ros.io

    monkeypatch.setattr(moge2_ros.io, "exr_available", lambda: False)
    rc = main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(tmp_path), "--exr"])
    assert rc == 2
    _assert_one_line_error(capsys.readouterr().err, "OpenEXR", "moge2_ros[exr]")


@pytest.mark.skipif(not exr_available(), reason="needs the optional 'exr' extra (OpenEXR)")
def test_exr_output(tmp_path: Path, tiny_model_path: Path, scene_image: Path) -> None:
    import OpenEXR

    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(tmp_path), "--exr",
                 *FAST]) == 0
    assert not (tmp_path / "room_depth.npy").exists()
    with OpenEXR.File(str(tmp_path / "room_depth.exr")) as exr:
        z = exr.channels()["Z"].pixels
    assert z.shape == (72, 96) and z.dtype == np.float32


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_infer_on_cuda(tmp_path: Path, tiny_model_path: Path, scene_image: Path, precision: str) -> None:
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(out), "--device", "cuda",
                 "--precision", precision, *FAST]) == 0
    _check_outputs(out, "room")


# ------------------------------------------------------------------------------------------------ errors


def test_missing_input_is_one_line_with_path(tmp_path: Path, tiny_model_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "does_not_exist.png"
    rc = main(["infer", str(missing), "--model", str(tiny_model_path), "--output", str(tmp_path / "out")])
    assert rc == 2
    _assert_one_line_error(capsys.readouterr().err, str(missing))
    assert not (tmp_path / "out").exists()


def test_corrupt_image_is_one_line(tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    rc = main(["infer", str(bad), "--model", str(tiny_model_path), "--output", str(tmp_path / "out"), "--quiet"])
    assert rc == 1
    _assert_one_line_error(capsys.readouterr().err, str(bad))


@pytest.mark.parametrize("model_kind", ["missing", "garbage", "directory"])
def test_bad_model_is_one_line(tmp_path: Path, scene_image: Path, model_kind: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.pt"
    if model_kind == "garbage":
        model.write_bytes(b"PK\x03\x04 not a zip archive at all" * 10)
    elif model_kind == "directory":
        model = tmp_path / "empty_model_dir"
        model.mkdir()
    rc = main(["infer", str(scene_image), "--model", str(model), "--output", str(tmp_path / "out")])
    assert rc == 1
    _assert_one_line_error(capsys.readouterr().err, str(model))


def test_cuda_requested_but_missing_is_one_line(tmp_path: Path, tiny_model_path: Path, scene_image: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    rc = main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(tmp_path),
               "--device", "cuda"])
    assert rc == 1
    _assert_one_line_error(capsys.readouterr().err, "CUDA is not available")


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--intrinsics", "1,2,3"], "--intrinsics"),
        (["--intrinsics", "0,100,50,40"], "focal"),
        (["--intrinsics", "a,b,c,d"], "--intrinsics"),
        (["--fov-x", "60", "--intrinsics", "1,1,1,1"], "not allowed with"),
        (["--fov-x", "0"], "--fov-x"),
        (["--resolution-level", "12"], "--resolution-level"),
        (["--num-tokens", "-5"], "--num-tokens"),
        (["--device", "tpu"], "--device"),
        (["--precision", "fp8"], "--precision"),
        (["--edge-rtol", "nan"], "--edge-rtol"),
        (["--intrinsics-file", "/nonexistent/K.json"], "/nonexistent/K.json"),
        (["--bogus"], "--bogus"),
    ],
)
def test_usage_errors_are_one_line_exit_2(tmp_path: Path, tiny_model_path: Path, scene_image: Path, extra: list[str],
                                          needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(tmp_path), *extra])
    assert rc == 2
    _assert_one_line_error(capsys.readouterr().err, needle)


def test_no_arguments_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().err
    assert main(["infer", "--help"]) == 0
    assert "--intrinsics" in capsys.readouterr().out
    assert main(["--version"]) == 0


def test_empty_folder_is_usage_error(tmp_path: Path, tiny_model_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "readme.txt").write_text("x")
    rc = main(["infer", str(tmp_path), "--model", str(tiny_model_path), "--output", str(tmp_path / "out")])
    assert rc == 2
    _assert_one_line_error(capsys.readouterr().err, str(tmp_path))


def test_output_that_is_a_file_is_usage_error(tmp_path: Path, tiny_model_path: Path, scene_image: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert main(["infer", str(scene_image), "--model", str(tiny_model_path), "--output", str(target)]) == 2
    _assert_one_line_error(capsys.readouterr().err, str(target))


# ------------------------------------------------------------------------------------------------ helpers


def test_parse_intrinsics_arg() -> None:
    k = parse_intrinsics_arg("500, 501,319.5,239.5")
    assert (k.fx, k.fy, k.cx, k.cy) == (500, 501, 319.5, 239.5)
    np.testing.assert_array_equal(k.matrix(), [[500, 0, 319.5], [0, 501, 239.5], [0, 0, 1]])
    for bad in ("1,2,3", "1,2,3,4,5", "inf,1,1,1", "-1,1,1,1"):
        with pytest.raises(InputError):
            parse_intrinsics_arg(bad)


def test_load_intrinsics_file_rejects_bad_content(tmp_path: Path) -> None:
    cases = {
        "skew.txt": "500 3 320\n0 500 240\n0 0 1\n",
        "five.txt": "1 2 3 4 5",
        "list.json": "[1, 2, 3]",
        "nokeys.json": '{"foo": 1}',
        "broken.json": '{"K": [1, 2',
        "badsize.yaml": "K: [500, 0, 320, 0, 500, 240, 0, 0, 1]\nwidth: -3\n",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=name.replace(".", r"\.")):
            load_intrinsics_file(path)


def test_output_stems_are_unique() -> None:
    files = [Path("x/a.png"), Path("x/a.jpg"), Path("y/a.png"), Path("x/b.png")]
    assert output_stems(files) == ["a_png", "a_jpg", "a_png_2", "b"]


def test_make_demo_model_warns_untrained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-demo-model", "--output", str(tmp_path / "m.pt")]) == 0
    assert "UNTRAINED" in capsys.readouterr().err
    assert (tmp_path / "m.pt").stat().st_size > 0


def test_make_example_image(tmp_path: Path) -> None:
    assert main(["make-example-image", "-o", str(tmp_path / "e.png"), "--width", "40", "--height", "30"]) == 0
    with Image.open(tmp_path / "e.png") as image:
        assert image.size == (40, 30) and image.mode == "RGB"


def test_make_example_image_rejects_a_field_of_view_it_cannot_render(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["make-example-image", "-o", str(tmp_path / "e.png"), "--fov-x", "5"]) == 2
    _assert_one_line_error(capsys.readouterr().err, "--fov-x")
    assert not (tmp_path / "e.png").exists()


def test_example_scene_ground_truth_is_consistent() -> None:
    scene = render_example_scene(80, 60, fov_x_deg=60)
    assert scene.rgb.shape == (60, 80, 3) and scene.depth.shape == (60, 80)
    assert np.isfinite(scene.depth).all() and (scene.depth > 0).all() and scene.depth.max() <= 7.0 + 1e-4
    assert scene.intrinsics[0, 0] == pytest.approx(40 / np.tan(np.radians(30)))


# ------------------------------------------------------------------------------------------------ the command


def _registered_commands() -> list[str]:
    parser = cli.build_parser()
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def test_every_subcommand_is_documented_in_the_docstring_and_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = _registered_commands()
    assert len(commands) == len(set(commands)) == 14
    for command in commands:
        assert f"``{command}``" in (cli.__doc__ or ""), command
        assert f"`{command}" in readme, command


def test_help_imports_nothing_heavy() -> None:
    code = ("import sys; from moge2_ros.cli import main; rc = main(['--help']); "
            "heavy = [m for m in ('torch', 'onnx', 'rosbags', 'rclpy', 'moge2_ros.pipeline.frame') "
            "if m in sys.modules]; "
            "assert rc == 0 and not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_only_the_entry_points_import_the_top_level_cli() -> None:
    """Subcommand modules take what they share from cli_args and errors, never from the command above them."""
    package = Path(moge2_ros.__file__).resolve().parent
    upward = re.compile(r"from moge2_ros\.cli import|import moge2_ros\.cli\b|from \.\.cli import")
    offenders = [str(path.relative_to(package)) for path in sorted(package.rglob("*.py"))
                 if path.name != "__main__.py" and upward.search(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_demo_runs_the_node_with_the_model_options(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``demo`` without ROS here: the runner is replaced; the bundled model is resolved (and said) once."""
    import types

    calls: dict = {}
    fake = types.ModuleType("moge2_ros.ros.run_demo")
    fake.run_demo = lambda model, **kwargs: calls.update(model=model, **kwargs) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "moge2_ros.ros.run_demo", fake)
    assert main(["demo", "--duration", "1", "--device", "cpu", "--num-tokens", "300"]) == 0
    assert calls["model"] == str(demo_model_path())
    assert calls["extra_params"] == ["-p", "device:=cpu", "-p", "precision:=auto", "-p", "num_tokens:=300"]
    assert (calls["resolution_level"], calls["duration"], calls["cameras"]) == (0, 1.0, 1)
    assert capsys.readouterr().err.count("bundled demo model") == 1
    assert main(["demo", "--duration", "1", "--cameras", "2"]) == 0 and calls["cameras"] == 2
    assert main(["demo", "--cameras", "3"]) == 2  # argparse's usage error


# ------------------------------------------------------------------------------------------------ console script


def _console_script() -> list[str]:
    script = shutil.which("moge2-ros", path=str(Path(sys.executable).parent))
    assert script is not None, "console script moge2-ros not installed next to the interpreter (pip install -e .)"
    return [script]


def test_console_script_smoke(tmp_path: Path, tiny_model_path: Path, scene_image: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run([*_console_script(), "infer", str(scene_image), "--model", str(tiny_model_path),
                         "--output", str(tmp_path / "out"), *FAST], capture_output=True, text=True, env=env,
                        timeout=240)
    assert ok.returncode == 0, ok.stderr
    _check_outputs(tmp_path / "out", "room")

    missing = tmp_path / "nope.png"
    bad = subprocess.run([*_console_script(), "infer", str(missing), "--model", str(tiny_model_path), "--output",
                          str(tmp_path / "out2")], capture_output=True, text=True, env=env, timeout=240)
    assert bad.returncode == 2
    _assert_one_line_error(bad.stderr, str(missing))


def test_infer_with_official_format_reference_checkpoint(tmp_path: Path, reference_dir: Path,
                                                         scene_image: Path) -> None:
    """The official-format ViT-S checkpoint (random weights, fp16 tensors, deflate zip) runs through the CLI."""
    out = tmp_path / "out"
    assert main(["infer", str(scene_image), "--model", str(reference_dir / "model.pt"), "--output", str(out),
                 *FAST]) == 0
    meta = _check_outputs(out, "room")
    assert meta["model"] == str(reference_dir / "model.pt")


def test_example_scene_camera_motion_changes_depth_consistently():
    from moge2_ros.data.example import render_example_scene

    a = render_example_scene(64, 48)
    b = render_example_scene(64, 48, camera_position=(0.0, 0.0, 0.5))
    # moving 0.5 m towards the back wall shortens the depth of the back wall (centre pixel) by exactly 0.5 m
    assert a.depth[24, 32] == pytest.approx(7.0, abs=1e-4)
    assert b.depth[24, 32] == pytest.approx(6.5, abs=1e-4)
