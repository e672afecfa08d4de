"""World-model backends behind one small interface (:mod:`mirage_env.models.interface`).

``from_preset("tiny")`` gives the CPU-sized model with the trained weights shipped in the package; ``from_preset("wan2.2-ti2v-5b", weights_dir=...)``
the real Wan2.2-TI2V-5B + Mirage add-on from local files. Depth providers for new content live in
:mod:`mirage_env.models.depth`, LoRA helpers in :mod:`mirage_env.models.lora`.
"""

from mirage_env.models.interface import SegmentRequest, WorldModel
from mirage_env.models.loading import MissingWeightsError
from mirage_env.models.presets import PRESETS, Preset, load_preset
from mirage_env.models.wan import WanWorldModel, from_preset

__all__ = ["PRESETS", "MissingWeightsError", "Preset", "SegmentRequest", "WanWorldModel", "WorldModel",
           "from_preset", "load_preset"]
