"""The bundled demo model: present, loads strictly, is what the CLI falls back to, and is actually trained
(it predicts the example room far better than the untrained random-init model of the same architecture)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moge2_ros.assets import DEMO_MODEL_NOTE, demo_model_path, resolve_default_model
from moge2_ros.checkpoints import load_model, read_checkpoint
from moge2_ros.data.example import render_example_scene
from moge2_ros.inference import Predictor
from moge2_ros.model.config import MoGe2Config


def _scale_invariant_absrel(model_source: str | Path) -> float:
    predictor = Predictor(load_model(model_source), device="cpu")
    errors = []
    for position in [(0.0, 0.0, 0.0), (0.3, 0.0, 0.4), (-0.4, 0.0, 1.0)]:
        scene = render_example_scene(256, 192, 60.0, camera_position=position)
        depth = predictor.predict(scene.rgb).depth[0].numpy()
        valid = np.isfinite(depth)
        assert valid.mean() > 0.5
        scale = np.median(scene.depth[valid] / depth[valid])
        errors.append(np.mean(np.abs(scale * depth[valid] - scene.depth[valid]) / scene.depth[valid]))
    return float(np.mean(errors))


def test_bundled_model_is_the_tiny_architecture_in_the_official_format() -> None:
    path = demo_model_path()
    assert path.name == "demo_model.safetensors" and path.stat().st_size < 8_000_000
    config, state_dict = read_checkpoint(path)
    assert MoGe2Config.from_dict(config).to_dict() == MoGe2Config.tiny().to_dict() | {
        "num_tokens_range": config["num_tokens_range"]}
    model = load_model(path)  # strict: every key of the file matches the architecture
    assert set(model.state_dict()) == set(state_dict)
    assert resolve_default_model(None) == (str(path), True)
    assert resolve_default_model("x.pt") == ("x.pt", False)


def test_bundled_model_is_trained(tiny_model_path: Path) -> None:
    """The demo model's relative depth beats the untrained model (random weights wired to a 60-degree pinhole,
    i.e. a fronto-parallel guess) on the example room. The margin is small: the demo model is weak
    (docs/DEMO_MODEL.md), and this guards against shipping an untrained or broken file."""
    trained = _scale_invariant_absrel(demo_model_path())
    untrained = _scale_invariant_absrel(tiny_model_path)
    assert trained < 0.3, trained
    assert trained < 0.9 * untrained, (trained, untrained)


@pytest.mark.slow
def test_cli_infer_defaults_to_the_bundled_model(tmp_path: Path) -> None:
    image = tmp_path / "room.png"
    from PIL import Image

    Image.fromarray(render_example_scene(160, 120).rgb).save(image)
    result = subprocess.run([sys.executable, "-m", "moge2_ros", "infer", str(image), "-o", str(tmp_path / "out"),
                             "-q", "--no-ply"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert DEMO_MODEL_NOTE in result.stderr
    assert '"model": "' + str(demo_model_path()) in (tmp_path / "out" / "room.json").read_text().replace("\\\\", "\\")
