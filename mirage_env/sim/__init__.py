"""Procedural 3D scene simulator: boxes, capsules and planes with solid textures, moving objects, a ray-cast renderer
giving RGB, exact z-depth, object ids and masks, and collision queries for camera motion."""

from mirage_env.sim.generate import sample_scene, scene_by_seed
from mirage_env.sim.motion import Mover, Path
from mirage_env.sim.placement import start_pose
from mirage_env.sim.primitives import Box, Capsule, Plane
from mirage_env.sim.renderer import RenderOutput, render, render_depth
from mirage_env.sim.scene import Scene
from mirage_env.sim.textures import Material

__all__ = ["Box", "Capsule", "Material", "Mover", "Path", "Plane", "RenderOutput", "Scene", "render", "render_depth",
           "sample_scene", "scene_by_seed", "start_pose"]
