"""Parity with the official MoGe-2 outputs stored in ../shared/reference/public (NOTES.md §0-§3)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from moge2_ros.checkpoints import load_model
from moge2_ros.model import SizeOps

pytestmark = pytest.mark.parity

INPUTS = ["i", "ii", "iii", "iv"]
ATOL = 1e-4  # ~fp32 reordering noise of the official model is <= 7e-5 (manifest fp64_vs_fp32)


@pytest.fixture(scope="module")
def model(reference_dir):
    return load_model(reference_dir / "model.pt")


@pytest.fixture(scope="module")
def manifest(reference_dir):
    return json.loads((reference_dir / "manifest.json").read_text())


def _input(reference_dir, key: str) -> torch.Tensor:
    return torch.from_numpy(np.load(reference_dir / f"input_{key}.npy"))


@pytest.mark.parametrize("key", INPUTS)
def test_forward_matches_official(model, manifest, reference_dir, key):
    num_tokens = manifest["inputs"][key]["num_tokens"]
    with torch.no_grad():
        out = model(_input(reference_dir, key)[None], num_tokens)
    assert set(out) == {"points", "mask", "metric_scale"}  # the reference model has no normal head
    for name in ("points", "mask", "metric_scale"):
        ref = np.load(reference_dir / f"fwd_{key}_{name}.npy")
        got = out[name].numpy()
        assert got.shape == ref.shape, name
        np.testing.assert_allclose(got, ref, rtol=0, atol=ATOL, err_msg=f"forward {key} {name}")


def test_37x37_grid_uses_stored_pos_embed(model, manifest, reference_dir):
    """Input iv (square, 37x37 tokens) takes DINOv2's no-interpolation shortcut."""
    assert manifest["inputs"]["iv"]["pos_embed_used_without_interpolation"]
    backbone = model.encoder.backbone
    with torch.no_grad():
        pos = backbone.interpolate_pos_encoding(37, 37, torch.float32)
        assert torch.equal(pos, backbone.pos_embed)
        # any other grid interpolates (with the 0.1 offset), even one just as wide or as tall
        for rows, cols in ((37, 38), (36, 37)):
            other = backbone.interpolate_pos_encoding(rows, cols, torch.float32)
            assert other.shape == (1, 1 + rows * cols, backbone.pos_embed.shape[-1])
            assert not torch.equal(other[:, : 1 + 36 * 36], backbone.pos_embed[:, : 1 + 36 * 36])
        # the official exporter's "onnx compatible mode" has no shortcut, but bicubic at scale 1 is the identity
        compatible = backbone.interpolate_pos_encoding(37, 37, torch.float32, SizeOps(official_compatible=True))
        assert torch.equal(compatible, backbone.pos_embed)


def test_intermediates_of_downsample_case(model, reference_dir):
    """Input iii: the encoder input is a downsample, so the antialiased resize and the pos-embed offset matter."""
    x = _input(reference_dir, "iii")[None]
    rows, cols = 9, 12
    enc = model.encoder
    with torch.no_grad():
        image14 = torch.nn.functional.interpolate(x, (rows * 14, cols * 14), mode="bilinear", align_corners=False, antialias=True)
        image14 = (image14 - enc.image_mean) / enc.image_std
        pos = enc.backbone.interpolate_pos_encoding(rows, cols, torch.float32)
        features, cls = enc(x, rows, cols)
        # DINOv2's own entry point runs the same trunk (forward_layers) on the normalised encoder input
        dinov2_cls = enc.backbone.get_intermediate_layers(image14, enc.layers)[-1][1]
    np.testing.assert_allclose(image14.numpy(), np.load(reference_dir / "dbg_iii_enc_image14_normalized.npy"), atol=1e-5, rtol=0)
    np.testing.assert_allclose(pos.numpy(), np.load(reference_dir / "dbg_iii_enc_pos_embed.npy"), atol=1e-6, rtol=0)
    np.testing.assert_allclose(features.numpy(), np.load(reference_dir / "dbg_iii_enc_features.npy"), atol=ATOL, rtol=0)
    np.testing.assert_allclose(cls.numpy(), np.load(reference_dir / "dbg_iii_enc_cls_token.npy"), atol=ATOL, rtol=0)
    np.testing.assert_allclose(dinov2_cls.numpy(), cls.numpy(), atol=1e-5, rtol=0)


INFER_CASES = [("i", 1200, None, "fovnone"), ("i", 1200, 60.0, "fov60"), ("ii", 900, None, "fovnone")]


@pytest.mark.parametrize("key,num_tokens,fov_x,tag", INFER_CASES)
def test_infer_matches_official(model, reference_dir, key, num_tokens, fov_x, tag):
    out = model.infer(_input(reference_dir, key), num_tokens=num_tokens, fov_x=fov_x, use_fp16=False)
    assert set(out) == {"points", "intrinsics", "depth", "mask"}
    ref_mask = np.load(reference_dir / f"infer_{key}_{tag}_mask.npy")
    mask = out["mask"].numpy()
    assert mask.dtype == np.bool_ and mask.shape == ref_mask.shape
    assert (mask != ref_mask).sum() == 0, "mask pixels flipped"
    for name in ("points", "depth", "intrinsics"):
        ref = np.load(reference_dir / f"infer_{key}_{tag}_{name}.npy")
        got = out[name].numpy()
        assert got.shape == ref.shape, name
        # +inf outside the mask, on both sides
        assert np.array_equal(np.isinf(got), np.isinf(ref)), f"{name}: inf pattern differs"
        finite = np.isfinite(ref)
        np.testing.assert_allclose(got[finite], ref[finite], rtol=0, atol=ATOL, err_msg=f"infer {key} {tag} {name}")


def test_infer_batched_matches_unbatched(model, reference_dir):
    image = _input(reference_dir, "iii")
    single = model.infer(image, num_tokens=300, use_fp16=False)
    batched = model.infer(torch.stack([image, image.flip(-1)]), num_tokens=300, use_fp16=False)
    assert batched["depth"].shape == (2, *single["depth"].shape)
    finite = torch.isfinite(single["depth"])
    torch.testing.assert_close(batched["depth"][0][finite], single["depth"][finite], atol=1e-5, rtol=0)
    torch.testing.assert_close(batched["intrinsics"][0], single["intrinsics"], atol=1e-6, rtol=0)


def test_infer_default_precision_on_cpu_is_float32(model, reference_dir):
    """use_fp16=None (default) runs float32 on CPU, so the default call gives the reference numbers."""
    out = model.infer(_input(reference_dir, "iii"), num_tokens=108)
    ref = model.infer(_input(reference_dir, "iii"), num_tokens=108, use_fp16=False)
    assert torch.equal(out["mask"], ref["mask"])
    assert torch.equal(out["depth"], ref["depth"])
