"""Plugins that act around experiences: morph schedules and policies, NeuMeta's width sweep."""

from neumeta_cl.plugins.morph import GrowPolicy, MorphPlugin, MorphStep
from neumeta_cl.plugins.widths import WidthSweep

__all__ = ["GrowPolicy", "MorphPlugin", "MorphStep", "WidthSweep"]
