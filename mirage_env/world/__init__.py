"""The segment loop that ties camera, memory and world model together (used by the envs and scripted rollouts)."""

from mirage_env.world.keyframes import KeyframeStore
from mirage_env.world.world import InitialView, Segment, StepTimings, World, WorldConfig, check_view

__all__ = ["InitialView", "KeyframeStore", "Segment", "StepTimings", "World", "WorldConfig", "check_view"]
