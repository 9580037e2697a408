"""One description of the bundled demo model: the model card (docs/DEMO_MODEL.md), docs/TRAINING.md and the
assets module name the training config that ``configs/train/demo_model.yaml`` is, with its numbers, and the
model file's own ``model_config`` agrees with that config."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from safetensors import safe_open

from _paths import REPO

CONFIG = REPO / "configs" / "train" / "demo_model.yaml"
MODEL = REPO / "moge2_ros" / "assets" / "demo_model.safetensors"
DOCS = [REPO / "docs" / "DEMO_MODEL.md", REPO / "docs" / "TRAINING.md"]


def _config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def _frame_count(config: dict) -> int:
    """Training frames: the ``--count`` of the ``make-synthetic`` commands (in the config's header) that wrote
    the config's training folders."""
    text = CONFIG.read_text()
    total = 0
    for source in config["data"]["train"]:
        assert source["kind"] == "folder", source
        match = re.search(rf"make-synthetic --output {re.escape(source['root'])} .*?--count +(\d+)", text)
        assert match, f"no make-synthetic command for {source['root']} in the header of {CONFIG.name}"
        total += int(match.group(1))
    return total


def _mentions(text: str, *variants: str) -> bool:
    return any(v in text for v in variants)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_describe_the_bundled_model_as_its_config_says(doc):
    config = _config()
    text = " ".join(doc.read_text().split())  # line breaks of the prose are spaces
    lo, hi = config["loop"]["num_tokens_range"]
    h, w = config["data"]["augment"]["image_size"]
    frames = _frame_count(config)
    expected = {
        "config": ("configs/train/demo_model.yaml",),
        "steps": (f"{config['loop']['steps']} steps",),
        "frames": (f"{frames} frames", f"{frames:,} frames", f"{frames} procedural", f"{frames} procedurally"),
        "batch": (f"batch {config['loop']['batch_size']}",),
        "tokens": (f"{lo}–{hi} tokens", f"{lo}-{hi} tokens"),
        "crops": (f"{h}×{w}", f"{h}x{w}"),
        "warm-up": (f"{config['schedule']['warmup_steps']} warm-up",),
    }
    missing = {what: variants for what, variants in expected.items() if not _mentions(text, *variants)}
    assert not missing, f"{doc.name} does not state the bundled model's {missing} (from {CONFIG.name})"


def test_the_model_file_matches_its_config_and_the_assets_module():
    with safe_open(str(MODEL), "pt") as f:
        model_config = json.loads(f.metadata()["model_config"])
    assert model_config["num_tokens_range"] == _config()["loop"]["num_tokens_range"]
    assert "configs/train/demo_model.yaml" in (REPO / "moge2_ros" / "assets" / "__init__.py").read_text()


def test_no_document_calls_the_bundled_model_untrained():
    """'untrained' / 'no bundled trained model' may describe make-demo-model's test model only."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "scripts" / "demo.sh"]:
        for line in doc.read_text().splitlines():
            low = line.lower()
            assert "no bundled trained model" not in low, f"{doc.name}: {line}"
            if "untrained" in low and "bundled" in low:
                assert "not the bundled" in low, f"{doc.name}: {line}"
