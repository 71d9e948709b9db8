"""Shared types and utilities: prompt sets, atomic files, value ranges, dataclass dicts, progress, grids.

Every other package may import these; they import nothing else of zerase_core.
"""
