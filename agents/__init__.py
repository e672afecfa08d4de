"""Agents for the mirage-env camera envs: random and scripted policies, PPO, evaluation on held-out seeds.

Commands (run from the repository root): ``python agents/random_agent.py``, ``python agents/scripted.py``,
``python agents/evaluate.py``, ``python agents/ppo.py``; see docs/agents.md.
"""
