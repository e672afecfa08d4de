"""Distributed rollouts on Ray (``pip install "mirage-env[distributed]"``).

:class:`~mirage_env.distributed.actor.WorldActor`: a Ray actor holding one world model and a batch of worlds
(a :class:`~mirage_env.envs.CameraVectorEnv`), one batched ``World.step`` per call.
:class:`~mirage_env.distributed.ray_vector_env.RayVectorEnv`: the client side, a Gymnasium vector env that spreads N
envs over K world actors and steps them in parallel. :mod:`mirage_env.distributed.rllib_env` registers the envs
with RLlib. See ``docs/distributed.md``.
"""

from mirage_env.distributed.actor import WorldActor
from mirage_env.distributed.ray_vector_env import RayVectorEnv

__all__ = ["RayVectorEnv", "WorldActor"]
