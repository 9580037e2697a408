"""Inference: the :class:`Predictor` (image -> metric :class:`Geometry`), its one factory
(:func:`load_predictor` from :class:`PredictorOptions`) and input validation."""

from .factory import PredictorOptions, load_predictor
from .predictor import Predictor, parse_dtype, resolve_device
from .result import Geometry

__all__ = ["Geometry", "Predictor", "PredictorOptions", "load_predictor", "parse_dtype", "resolve_device"]
