"""Reinforcement learning (the RLlib PPO agent): built under its own issue."""
