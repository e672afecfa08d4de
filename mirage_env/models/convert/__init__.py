"""Conversion of the weights users have (the original Wan2.2 release, the Mirage release's VACE and LoRA
checkpoints) into the layout ``from_preset`` reads; see :func:`convert_weights` and ``mirage-env convert``."""

from mirage_env.models.convert.layout import ConversionReport, convert_weights
from mirage_env.models.convert.placing import MissingTensorsError, TensorShapeError, UnplacedTensorsError
from mirage_env.models.convert.reading import PickleRefusedError

__all__ = ["ConversionReport", "MissingTensorsError", "PickleRefusedError", "TensorShapeError",
           "UnplacedTensorsError", "convert_weights"]
