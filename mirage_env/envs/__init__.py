"""Gymnasium envs where camera motion is the action and frames of the video world model are the observation.

Importing this package registers ``MirageEnv/Camera-v0`` (continuous) and ``MirageEnv/Keys-v0`` (keyboard);
see :mod:`mirage_env.envs.actions` for the action spaces and units, :mod:`mirage_env.envs.observations` for the
observations, :mod:`mirage_env.envs.core` for the info keys and settings, :mod:`mirage_env.envs.rewards` for
the rewards.
"""

from mirage_env.envs.camera_env import CameraEnv
from mirage_env.envs.core import EnvConfig
from mirage_env.envs.model_cache import clear_model_cache, shared_model
from mirage_env.envs.registration import ENV_IDS, register_envs
from mirage_env.envs.vector_env import CameraVectorEnv
from mirage_env.envs.wrappers import LatentObservation, LatentVectorObservation

register_envs()

__all__ = ["ENV_IDS", "CameraEnv", "CameraVectorEnv", "EnvConfig", "LatentObservation", "LatentVectorObservation",
           "clear_model_cache", "register_envs", "shared_model"]
