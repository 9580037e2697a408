"""Model construction from the official model_config schema (no reference outputs needed)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from moge2_ros.errors import ConfigError
from moge2_ros.model import MoGe2Config, MoGe2Model


@pytest.fixture(scope="module")
def spec(reference_dir):
    # reference_dir applies the CI fail-if-missing rule; the spec file sits one level up
    return json.loads((reference_dir.parent / "moge2_state_dict_spec.json").read_text())


def _on_meta(config) -> MoGe2Model:
    with torch.device("meta"):
        return MoGe2Model(config)


@pytest.mark.parity
def test_official_vitl_config_param_count_and_keys(spec):
    entry = spec["configs"]["vitl14_v2json"]
    model = _on_meta(entry["model_config"])
    assert sum(p.numel() for p in model.parameters()) == 330_901_544 == entry["param_count"]
    state = model.state_dict()
    expected = {e["key"]: e["shape"] for e in entry["state_dict"]}
    assert set(state) == set(expected)
    assert {k: list(v.shape) for k, v in state.items()} == expected


@pytest.mark.parity
@pytest.mark.parametrize("name", ["vits14_variant", "vitb14_variant", "public_parity_config"])
def test_other_spec_configs(spec, name):
    entry = spec["configs"][name]
    model = _on_meta(entry["model_config"])
    assert sum(p.numel() for p in model.parameters()) == entry["param_count"]
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == {e["key"]: e["shape"] for e in entry["state_dict"]}
    by_part = {}
    for k, v in model.named_parameters():
        part = "encoder.output_projections" if k.startswith("encoder.output_projections") else (
            "encoder.backbone" if k.startswith("encoder.backbone") else k.split(".")[0])
        by_part[part] = by_part.get(part, 0) + v.numel()
    assert by_part == entry["param_count_by_part"]


@pytest.mark.parity
@pytest.mark.parametrize("name", ["vitl14_v2json", "vits14_variant", "public_parity_config"])
def test_config_round_trips_unchanged(spec, name):
    cfg = spec["configs"][name]["model_config"]
    assert MoGe2Config.from_dict(cfg).to_dict() == cfg


def test_vitg_backbone_uses_swiglu():
    cfg = MoGe2Config.tiny().to_dict()
    cfg["encoder"] = {"backbone": "dinov2_vitg14", "intermediate_layers": [9, 19, 29, 39], "dim_out": 96}
    cfg["scale_head"]["dims"][0] = 1536
    model = _on_meta(cfg)
    keys = model.state_dict().keys()
    assert "encoder.backbone.blocks.39.mlp.w12.weight" in keys and "encoder.backbone.blocks.0.mlp.fc1.weight" not in keys
    assert tuple(model.state_dict()["encoder.backbone.blocks.0.mlp.w12.weight"].shape) == (2 * 4096, 1536)
    assert sum(p.numel() for p in model.encoder.backbone.parameters()) == 1_136_480_768  # DINOv2 ViT-g/14


def test_tiny_config_custom_backbone_round_trip_and_forward():
    cfg = MoGe2Config.tiny()
    d = cfg.to_dict()
    assert d["encoder"]["backbone"]["embed_dim"] == 96
    assert MoGe2Config.from_dict(d).to_dict() == d
    torch.manual_seed(0)
    model = MoGe2Model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 50, 70), 120)
    assert out["points"].shape == (2, 50, 70, 3)
    assert out["normal"].shape == (2, 50, 70, 3)
    assert out["mask"].shape == (2, 50, 70) and float(out["mask"].min()) >= 0 and float(out["mask"].max()) <= 1
    assert out["metric_scale"].shape == (2,) and bool((out["metric_scale"] > 0).all())
    torch.testing.assert_close(out["normal"].norm(dim=-1), torch.ones(2, 50, 70))
    assert bool((out["points"][..., 2] > 0).all())  # 'exp' remap: positive depth


@pytest.mark.parametrize("mode", ["linear", "sinh", "exp", "sinh_exp"])
def test_remap_modes(mode):
    d = MoGe2Config.tiny(with_normal=False).to_dict()
    d["remap_output"] = mode
    model = MoGe2Model(d)
    raw = torch.tensor([[[[0.5, -0.25, 0.3]]]])
    got = model._remap_points(raw)[0, 0, 0]
    x, y, z = 0.5, -0.25, 0.3
    expected = {
        "linear": [x, y, z],
        "sinh": [torch.sinh(torch.tensor(v)).item() for v in (x, y, z)],
        "exp": [x * torch.exp(torch.tensor(z)).item(), y * torch.exp(torch.tensor(z)).item(), torch.exp(torch.tensor(z)).item()],
        "sinh_exp": [torch.sinh(torch.tensor(x)).item(), torch.sinh(torch.tensor(y)).item(), torch.exp(torch.tensor(z)).item()],
    }[mode]
    torch.testing.assert_close(got, torch.tensor(expected))


@pytest.mark.parametrize("resampler", ["conv_transpose", "bilinear", "nearest", "pixel_shuffle"])
@pytest.mark.parametrize("norms", [("none", "none"), ("layer_norm", "group_norm"), ("instance_norm", "layer_norm")])
def test_resamplers_and_norms_build_and_run(resampler, norms):
    d = MoGe2Config.tiny(with_normal=False).to_dict()
    for part in ("neck", "points_head", "mask_head"):
        d[part]["resamplers"] = [resampler] * 4
        d[part]["res_block_in_norm"], d[part]["res_block_hidden_norm"] = norms
    model = MoGe2Model(d).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 28, 42), 6)
    assert out["points"].shape == (1, 28, 42, 3) and torch.isfinite(out["points"]).all()


def test_conv_transpose_initialised_as_nearest():
    model = MoGe2Model(MoGe2Config.tiny(with_normal=False))
    w = model.neck.resamplers[0][0].weight
    assert torch.equal(w, w[:, :, :1, :1].expand_as(w))


def test_intermediate_layers_int_and_list():
    d = MoGe2Config.tiny(with_normal=False).to_dict()
    d["encoder"]["intermediate_layers"] = 2
    assert MoGe2Model(d).encoder.layers == [2, 3]
    d["encoder"]["intermediate_layers"] = [3, 0]
    assert MoGe2Model(d).encoder.layers == [0, 3]  # block order, as the official code


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: d["encoder"].update(backbone="resnet50"), "unknown backbone"),
        (lambda d: d.pop("neck"), "missing key 'neck'"),
        (lambda d: d.update(remap_output="log"), "remap_output"),
        (lambda d: d["neck"].update(resamplers=["conv_transpose"] * 3 + ["avg_pool"]), "unsupported resampler"),
        (lambda d: d["neck"].update(dim_in=[10, 2, 2, 2, 2]), "neck.dim_in[0]"),
        (lambda d: d["points_head"].update(dim_out=[None, None, None, None, 2]), "points_head.dim_out[-1]"),
        (lambda d: d["scale_head"].update(dims=[5, 1]), "scale_head.dims[0]"),
        (lambda d: d["encoder"].update(intermediate_layers=[0, 99]), "intermediate_layers"),
        (lambda d: d["neck"].update(dim_res_blocks=[96, 64, 32]), "dim_res_blocks"),
    ],
)
def test_bad_configs_raise_config_error(mutate, needle):
    d = copy.deepcopy(MoGe2Config.tiny().to_dict())
    mutate(d)
    with pytest.raises(ConfigError, match=".*" + needle.replace("[", r"\[").replace("]", r"\]")):
        MoGe2Config.from_dict(d)
