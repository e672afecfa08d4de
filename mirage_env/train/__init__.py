"""Training: simulator clips, the tiny VAE, and a resumable trainer (flow matching for the add-on and LoRA)."""

from mirage_env.train.clips import Clip, ClipConfig, sample_clip
from mirage_env.train.trainer import Shard, TrainConfig, Trainer

__all__ = ["Clip", "ClipConfig", "Shard", "TrainConfig", "Trainer", "sample_clip"]
