"""Podium: run a team of AI coding agents in parallel through one durable store."""

__version__ = "0.1.0"
