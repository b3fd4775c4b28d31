"""Experience-level callbacks that change the network between experiences (morph schedules)."""

from neumeta_cl.callbacks.morph import GrowPolicy, MorphCallback, MorphStep

__all__ = ["GrowPolicy", "MorphCallback", "MorphStep"]
