"""Experience-level callbacks that change the network between experiences (morph schedules)."""

from neumeta_cl.callbacks.morph import MorphCallback, MorphStep

__all__ = ["MorphCallback", "MorphStep"]
