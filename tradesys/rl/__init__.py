"""Reinforcement learning: reserved for the RLlib PPO agent (issue: RL agent). It holds no code yet."""
