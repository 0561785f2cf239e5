"""Agents: the worker runtime and its backends."""
