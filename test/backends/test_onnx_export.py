"""ONNX export: exact resize maths, in-graph token grid, the export variant of the size-dependent steps,
export + validation (refusal), CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from moge2_ros.backends import onnx_export
from moge2_ros.backends.onnx_export import OnnxExportError, ValidationCase, export_onnx
from moge2_ros.backends.onnx_ops import ExportOps
from moge2_ros.backends.onnx_resize import cubic_matrix, resize_bilinear, resize_bilinear_aa
from moge2_ros.backends.onnx_runtime import OnnxRuntimeBackend
from moge2_ros.errors import InputError
from moge2_ros.model import MoGe2Model, SizeOps, token_grid

SIZES = [(240, 320, 420, 560), (180, 240, 126, 168), (300, 200, 518, 336), (70, 70, 518, 518), (481, 643, 3, 2),
         (5, 7, 14, 28), (1080, 1920, 700, 1204)]


@pytest.mark.parametrize("h,w,oh,ow", SIZES)
def test_resize_matches_torch(h, w, oh, ow):
    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    aa = F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False, antialias=True)
    lin = F.interpolate(x, (oh, ow), mode="bilinear", align_corners=False, antialias=False)
    # float32 rounding noise only: values are in [0, 1]
    assert (resize_bilinear_aa(x, oh, ow) - aa).abs().max() < 1e-6
    assert (resize_bilinear(x, oh, ow) - lin).abs().max() < 1e-6
    # the two modes really differ when downsampling, so the test can tell them apart
    if oh < h / 2:
        assert (aa - lin).abs().max() > 1e-2


@pytest.mark.parametrize("rows,cols", [(30, 40), (9, 12), (37, 24), (37, 37), (52, 69), (1, 2)])
def test_cubic_matrix_matches_pos_embed_interpolation(rows, cols):
    grid = torch.randn(1, 8, 37, 37, generator=torch.Generator().manual_seed(rows))
    ref = F.interpolate(grid, scale_factor=((rows + 0.1) / 37, (cols + 0.1) / 37), mode="bicubic", antialias=False)
    sy, sx = (torch.tensor((v + 0.1) / 37, dtype=torch.float64) for v in (rows, cols))
    got = cubic_matrix(37, rows, sy) @ grid @ cubic_matrix(37, cols, sx).T
    assert got.shape == ref.shape and (got - ref).abs().max() < 2e-6
    ref_size = F.interpolate(grid, size=(rows, cols), mode="bicubic", antialias=False)
    got_size = cubic_matrix(37, rows) @ grid @ cubic_matrix(37, cols).T
    assert (got_size - ref_size).abs().max() < 2e-6


def test_token_grid_of_tensors_equals_python_rounding():
    """The in-graph token grid (int64 budget, float64 sizes: what a dynamic export traces) == the Python one."""
    cases = [(n, h, w) for n in (1, 100, 108, 300, 900, 1200, 1369, 2400, 3600) for h, w in
             ((240, 320), (300, 200), (70, 70), (480, 640), (1080, 1920), (97, 251), (4, 1))]
    cases.append((8, 2, 1))  # sqrt(8 * 1 / 2) = 2 exactly, sqrt(16) = 4
    cases.append((2, 8, 2))  # rows = sqrt(8) = 2.83, cols = 0.707
    cases.append((25, 1, 4))  # rows = sqrt(6.25) = 2.5 exactly: half to even -> 2
    for n, h, w in cases:
        aspect = torch.tensor(w, dtype=torch.float64) / torch.tensor(h, dtype=torch.float64)
        rows, cols = token_grid(torch.tensor(n), aspect)
        assert rows.dtype == cols.dtype == torch.int64
        assert (int(rows), int(cols)) == token_grid(n, w / h), (n, h, w)


@pytest.mark.parametrize("start,end,steps", [(-0.6, 0.6, 40), (-0.79, 0.79, 1), (-0.5, 0.5, 2), (0.1, -0.3, 641),
                                             (-0.8, 0.8, 1017)])
def test_export_linspace_matches_torch(start, end, steps):
    got = ExportOps().linspace(torch.tensor(start, dtype=torch.float64), end, steps, dtype=torch.float32)
    ref = torch.linspace(start, end, steps, dtype=torch.float32)
    # torch's vectorised kernel steps from each chunk's base: float32 rounding noise only (NOTES.md §2.9)
    assert got.shape == ref.shape and (got - ref).abs().max() <= 1.2e-7


# tiny_model: test/conftest.py (seed 0, with the normal head)


def test_forward_is_the_composition_of_its_pieces(tiny_model):
    """Backends call grid_inputs / core / finish_outputs separately: together they are the forward, bit for bit."""
    x = torch.rand(2, 3, 45, 61)
    with torch.no_grad():
        ref = tiny_model(x, 96)
        inputs = tiny_model.grid_inputs(x, 96)
        got = tiny_model.finish_outputs(tiny_model.core(*inputs), 45, 61)
    assert [t.shape for t in inputs[:2]] == [(2, 3, 8 * 14, 11 * 14), (1, 1 + 8 * 11, 48)]  # 8x11 grid
    assert [u.shape[-2:] for u in inputs.uv] == [(8 * 2**level, 11 * 2**level) for level in range(5)]
    assert list(ref) == list(got) == tiny_model.output_names == ["points", "normal", "mask", "metric_scale"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.parametrize("official", [False, True])
@pytest.mark.parametrize("b,h,w,n", [(2, 45, 61, 96), (1, 70, 90, 24), (1, 518, 518, 1369), (1, 20, 300, 40)])
def test_export_variant_matches_eager(tiny_model, official, b, h, w, n):
    """The export variant of the size-dependent steps, run eagerly (the exported graph's maths), equals the eager
    forward up to float32 rounding — including the 37x37 stored-pos-embed shortcut, encoder up- and downsampling
    and an extreme aspect ratio."""
    x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(h))
    with torch.no_grad():
        ref = tiny_model(x, n, ops=SizeOps(official_compatible=official))
        got = tiny_model(x, torch.tensor(n), ops=ExportOps(official_compatible=official))
        other = tiny_model(x, n, ops=SizeOps(official_compatible=not official))
    for k in ref:
        assert (got[k] - ref[k]).abs().max() < 1e-5, k
    if n != 37 * 37:  # the two numerics really differ (pos-embed offset; antialias when the encoder downsamples)
        assert max((other[k] - ref[k]).abs().max() for k in ref) > 1e-4


@pytest.fixture(scope="module")
def static_export(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny_static.onnx"
    report = export_onnx(tiny_model, path, dynamic=False, height=60, width=80, num_tokens=48)
    return path, report


def test_static_export_is_checked_and_matches(static_export, tiny_model):
    path, report = static_export
    assert path.is_file() and not report.dynamic and report.output_names == ["points", "normal", "mask",
                                                                               "metric_scale"]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == report.output_names
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["moge2_ros.num_tokens"]) == 48 and json.loads(meta["moge2_ros.dynamic"]) is False
    assert max(report.max_abs().values()) < 1e-5
    # an independent comparison, on another image than the exporter's
    backend = OnnxRuntimeBackend(path, providers=["cpu"])
    x = torch.rand(1, 3, 60, 80, generator=torch.Generator().manual_seed(5))
    got = backend(x, 48)
    with torch.no_grad():
        ref = tiny_model(x, 48)
    for k in ref:
        assert (got[k] - ref[k]).abs().max() < 1e-5, k


def test_mismatching_export_is_refused_and_not_written(static_export, tiny_model, tmp_path, monkeypatch):
    """A graph that does not reproduce the model (here: the graph of other weights) is never written."""
    proto = onnx.load(str(static_export[0]))
    monkeypatch.setattr(onnx_export, "_run_exporter", lambda *a, **k: proto)
    other = MoGe2Model(tiny_model.config).eval()  # same architecture, different random weights
    target = tmp_path / "bad.onnx"
    with pytest.raises(OnnxExportError, match="does not reproduce torch.*file not written"):
        export_onnx(other, target, dynamic=False, height=60, width=80, num_tokens=48)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_bad_export_arguments(tiny_model, tmp_path):
    with pytest.raises(InputError, match="opset"):
        export_onnx(tiny_model, tmp_path / "a.onnx", opset=17)
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(tiny_model, tmp_path / "missing" / "a.onnx")
    with pytest.raises(InputError, match="num_tokens"):
        export_onnx(tiny_model, tmp_path / "a.onnx", num_tokens=0)
    with pytest.raises(InputError, match="static export"):
        export_onnx(tiny_model, tmp_path / "a.onnx", dynamic=False, height=60, width=80, num_tokens=48,
                    validation_cases=[ValidationCase(70, 80, 48)])
    assert list(tmp_path.iterdir()) == []


def test_cli_export_onnx(static_export, tiny_model, tmp_path, monkeypatch, capsys):
    """``moge2-ros export-onnx`` through the real parser (module registered via SUBCOMMAND_MODULES)."""
    from moge2_ros import cli
    from moge2_ros.checkpoints import save_checkpoint

    checkpoint = tmp_path / "model.pt"
    save_checkpoint(tiny_model, checkpoint)
    proto = onnx.load(str(static_export[0]))
    monkeypatch.setattr(onnx_export, "_run_exporter", lambda *a, **k: proto)  # reuse the fixture's graph: fast
    monkeypatch.setattr(cli, "SUBCOMMAND_MODULES", ("moge2_ros.backends.cli",))
    out = tmp_path / "m.onnx"
    code = cli.main(["export-onnx", "--model", str(checkpoint), "--output", str(out), "--height", "60",
                     "--width", "80", "--num-tokens", "48", "--json"])
    assert code == 0 and out.is_file()
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"] == ["points", "normal", "mask", "metric_scale"] and summary["max_abs_diff"]["points"] < 1e-5
    code = cli.main(["export-onnx", "--model", str(checkpoint), "--output", str(tmp_path / "x.onnx"), "--height", "0"])
    assert code == 2 and "--height" in capsys.readouterr().err


def _export_stderr(tiny_model, tmp_path, keep_notices: bool) -> tuple[int, str]:
    """stderr of ``moge2-ros export-onnx`` (a real static export of the tiny model) in a fresh process."""
    import subprocess
    import sys

    from moge2_ros.checkpoints import save_checkpoint

    checkpoint = tmp_path / "model.pt"
    save_checkpoint(tiny_model, checkpoint)
    patch = ("import moge2_ros.backends.onnx_export as e; e._DropTorchvisionNotice.filter = lambda self, r: True; "
             if keep_notices else "")
    code = (patch + "import sys; from moge2_ros.cli import main; sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", code, "export-onnx", "--model", str(checkpoint), "--output",
                          str(tmp_path / "m.onnx"), "--height", "48", "--width", "64", "--num-tokens", "48"],
                         capture_output=True, text=True, timeout=300)
    return run.returncode, run.stderr


@pytest.mark.slow
def test_cli_export_onnx_prints_no_torchvision_notices(tiny_model, tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: torch.onnx has no notice to print")
    rc, stderr = _export_stderr(tiny_model, tmp_path / "quiet", keep_notices=False)
    assert rc == 0, stderr
    assert "torchvision" not in stderr, stderr
    # the notices exist without the filter (so the check above can fail)
    rc, stderr = _export_stderr(tiny_model, tmp_path / "noisy", keep_notices=True)
    assert rc == 0 and "torchvision is not installed" in stderr, stderr


# ---------------------------------------------------------------------------------------------- reference model (slow)


@pytest.mark.slow
def test_reference_model_dynamic_export_equals_torch(reference_dir, tmp_path):
    """The public reference model: ONNX == torch within 1e-4 at sizes / aspect ratios / batch the export did not see,
    including an image smaller than the encoder input and the 37x37 stored-pos-embed case; outputs also match the
    official forward outputs stored with the reference."""
    from moge2_ros.checkpoints import load_model

    model = load_model(reference_dir / "model.pt")
    cases = [ValidationCase(240, 320, 300), ValidationCase(300, 200, 900), ValidationCase(97, 251, 600, batch=2),
             ValidationCase(70, 70, 1369)]
    path = tmp_path / "ref.onnx"
    report = export_onnx(model, path, dynamic=True, height=240, width=320, num_tokens=300, validation_cases=cases)
    assert report.dynamic and len(report.validation) == 4
    assert max(report.max_abs().values()) < 1e-4
    backend = OnnxRuntimeBackend(path, providers=["cpu"])
    assert backend.has_num_tokens_input and backend.static_shape is None
    manifest = json.loads((reference_dir / "manifest.json").read_text())
    for key in ("iii", "ii"):  # iii: encoder downsample (antialias matters); ii: portrait, 888 != 900 tokens
        x = torch.from_numpy(np.load(reference_dir / f"input_{key}.npy"))[None]
        got = backend(x, manifest["inputs"][key]["num_tokens"])
        for name in ("points", "mask", "metric_scale"):
            ref = np.load(reference_dir / f"fwd_{key}_{name}.npy")
            np.testing.assert_allclose(got[name].numpy(), ref, rtol=0, atol=1e-4, err_msg=f"{key} {name}")


@pytest.mark.slow
def test_official_compatible_variant_differs_from_eager(reference_dir, tmp_path):
    """The official-compatible variant reproduces its own numerics but not the eager model (downsample case)."""
    from moge2_ros.checkpoints import load_model

    model = load_model(reference_dir / "model.pt")
    path = tmp_path / "official.onnx"
    report = export_onnx(model, path, dynamic=True, height=180, width=240, num_tokens=108, official_compatible=True,
                         validation_cases=[ValidationCase(180, 240, 108)])
    assert max(report.max_abs().values()) < 1e-4  # equal to the official-mode eager forward
    x = torch.from_numpy(np.load(reference_dir / "input_iii.npy"))[None]
    got = OnnxRuntimeBackend(path, providers=["cpu"])(x, 108)
    with torch.no_grad():
        ref = model(x, 108)
    assert (got["points"] - ref["points"]).abs().max() > 1e-2
