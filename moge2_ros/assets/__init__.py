"""Files shipped inside the package: the bundled demo model.

The demo model (``demo_model.safetensors``, ~3 MB) is the tiny MoGe-2 of :meth:`MoGe2Config.tiny` trained by this
package's own pipeline from scratch on procedurally rendered rooms and streets (``configs/train/demo_model.yaml``,
model card: ``docs/DEMO_MODEL.md``).  It makes everything work offline; it is a demo, not a substitute for the
official weights (``Ruicheng/moge-2-vitl-normal``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moge2_ros.errors import ModelLoadError

__all__ = ["DEMO_MODEL_NAME", "DEMO_MODEL_NOTE", "demo_model_path", "model_source", "resolve_default_model"]

DEMO_MODEL_NAME = "demo_model.safetensors"

#: What the CLI and the node print when they fall back to the bundled model.
DEMO_MODEL_NOTE = (
    "using the bundled demo model (a 1.5 M-parameter MoGe-2 trained on synthetic scenes only, see "
    "docs/DEMO_MODEL.md); for real use give the official weights, e.g. Ruicheng/moge-2-vitl-normal"
)


def demo_model_path() -> Path:
    """Path of the bundled demo model file.

    Raises:
        ModelLoadError: the file is missing from this installation.
    """
    path = Path(__file__).resolve().parent / DEMO_MODEL_NAME
    if not path.is_file():
        raise ModelLoadError(f"the bundled demo model is missing from this installation ({path}); give a model "
                             "explicitly (a model.pt / .safetensors file, a directory or a Hugging Face id)")
    return path


def resolve_default_model(source: str | Path | None) -> tuple[str, bool]:
    """``(source, is_default)``: the given model source, or the bundled demo model when none is given."""
    if source is None or str(source).strip() == "":
        return str(demo_model_path()), True
    return str(source), False


def model_source(source: str | Path | None, say: Callable[[str], None] | None = None) -> str:
    """The model to load: ``source``, or the bundled demo model's path when none is given, and then
    :data:`DEMO_MODEL_NOTE` goes to ``say``.  The one fallback of :func:`moge2_ros.inference.load_predictor` and of
    the commands that load a model without predicting (ONNX export, fine-tuning, the demo) or record it first."""
    resolved, is_default = resolve_default_model(source)
    if is_default and say is not None:
        say(DEMO_MODEL_NOTE)
    return resolved
