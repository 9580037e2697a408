"""The loader checks before it allocates: hostile configs fail fast and small, in a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moge2_ros.checkpoints import load_model
from moge2_ros.errors import ConfigError, ModelLoadError
from moge2_ros.model import MoGe2Config

# Runs in a fresh interpreter: max RSS after the imports, then after the failed load; KiB on Linux.
_PROBE = r"""
import json, resource, sys, time
import torch
from moge2_ros.checkpoints import load_model
from moge2_ros.errors import ModelLoadError
torch.zeros(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load_model(sys.argv[1])
    outcome = "loaded"
except ModelLoadError as exc:
    outcome = "ModelLoadError: " + str(exc)
except BaseException as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:300]
seconds = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "seconds": seconds, "growth_mb": (after - before) / 1024}))
"""


def _probe(path: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _huge_in_range_config() -> dict:
    """Every size at the top of the accepted ranges: ~400 GB of float32 weights if it were allocated."""
    d = MoGe2Config.tiny().to_dict()
    width = 8192
    d["encoder"] = {"backbone": {"embed_dim": width, "depth": 128, "num_heads": 64, "pos_grid": 256},
                    "intermediate_layers": 4, "dim_out": width}
    widths = [width] * 5
    d["neck"].update(dim_in=[width + 2, 2, 2, 2, 2], dim_res_blocks=widths, num_res_blocks=[16] * 5)
    for head in ("points_head", "normal_head", "mask_head"):
        d[head].update(dim_in=widths, dim_res_blocks=widths, num_res_blocks=[16] * 5)
    d["scale_head"] = {"dims": [width] + [16384] * 15 + [1]}
    MoGe2Config.from_dict(d)  # in range: the config alone is accepted
    return d


@pytest.mark.parametrize("case", ["absurd", "huge_in_range"])
def test_hostile_config_with_empty_weights_fails_fast_and_small(tmp_path, case):
    if case == "absurd":
        config = MoGe2Config.tiny().to_dict()
        config["encoder"]["backbone"] = {"embed_dim": 10**6, "depth": 10**4, "num_heads": 1000}
        needle = "invalid model_config: encoder.backbone.embed_dim"
    else:
        config = _huge_in_range_config()
        needle = "weights do not match the model built from its model_config — missing keys"
    path = tmp_path / "hostile.pt"
    torch.save({"model_config": config, "model": {}}, path)
    result = _probe(path)
    assert result["outcome"].startswith("ModelLoadError: ") and needle in result["outcome"], result
    assert result["seconds"] < 1.0, result
    assert result["growth_mb"] < 200, result


def test_huge_config_with_mismatched_tensors_is_refused_before_allocation(tmp_path):
    """Real tensors, but shapes that disagree with the (huge) config: refused by name, nothing materialised."""
    config = _huge_in_range_config()
    path = tmp_path / "mismatch.pt"
    torch.save({"model_config": config, "model": {"encoder.backbone.cls_token": torch.zeros(1, 1, 8)}}, path)
    result = _probe(path)
    assert "shape mismatch: encoder.backbone.cls_token (checkpoint (1, 1, 8), model (1, 1, 8192))" in \
        result["outcome"], result
    assert result["seconds"] < 1.0 and result["growth_mb"] < 200, result


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda d: d["encoder"]["backbone"].update(embed_dim=8193 * 3, num_heads=3), "encoder.backbone.embed_dim"),
        (lambda d: d["encoder"]["backbone"].update(depth=129), "encoder.backbone.depth"),
        (lambda d: d["encoder"]["backbone"].update(num_heads=96 * 2), "encoder.backbone.num_heads"),
        (lambda d: d["encoder"]["backbone"].update(mlp_ratio=1e9), "encoder.backbone.mlp_ratio"),
        (lambda d: d["encoder"]["backbone"].update(pos_grid=10**5), "encoder.backbone.pos_grid"),
        (lambda d: d["encoder"]["backbone"].update(embed_dim="96"), "encoder.backbone.embed_dim"),
        (lambda d: d["encoder"].update(dim_out=10**7), "encoder.dim_out"),
        (lambda d: d["neck"].update(dim_res_blocks=[96, 64, 32, 16, 10**6]), "neck.dim_res_blocks"),
        (lambda d: d["neck"].update(num_res_blocks=[0, 1, 1, 10**6, 0]), "neck.num_res_blocks"),
        (lambda d: d["points_head"].update(dim_out=[None, None, None, 10**6, 3]), "points_head.dim_out"),
        (lambda d: d["mask_head"].update(dim_times_res_block_hidden=10**4), "mask_head.dim_times_res_block_hidden"),
        (lambda d: d.update(scale_head={"dims": [96, 10**8, 1]}), "scale_head.dims"),
        (lambda d: d.update(scale_head={"dims": [96] + [8] * 100 + [1]}), "scale_head.dims"),
        (lambda d: d.update(num_tokens_range=[1200, 10**9]), "num_tokens_range"),
    ],
)
def test_out_of_range_config_names_the_field(mutate, field):
    d = MoGe2Config.tiny().to_dict()
    mutate(d)
    with pytest.raises(ConfigError, match="^" + field.replace(".", r"\.")) as err:
        MoGe2Config.from_dict(d)
    assert len(str(err.value)) < 300


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14"])
def test_official_backbones_are_within_the_limits(name):
    d = MoGe2Config.tiny().to_dict()
    d["encoder"]["backbone"] = name
    d["encoder"]["dim_out"] = 1024
    d["neck"]["dim_in"][0] = 1026
    d["scale_head"]["dims"][0] = {"dinov2_vits14": 384, "dinov2_vitb14": 768, "dinov2_vitl14": 1024,
                                  "dinov2_vitg14": 1536}[name]
    assert MoGe2Config.from_dict(d).encoder.backbone.name == name


def test_loaded_model_has_no_meta_or_uninitialised_tensors(tiny_model_path):
    """Built on meta, materialised empty, then every value comes from the file."""
    model = load_model(tiny_model_path)
    stored = torch.load(tiny_model_path, weights_only=True)["model"]
    state = model.state_dict()
    assert set(state) == set(stored)
    assert all(v.device.type == "cpu" for v in state.values())
    assert all(torch.equal(state[k], stored[k].to(state[k].dtype)) for k in stored)
