"""Checks and file helpers behind config.load, one idea per module."""
