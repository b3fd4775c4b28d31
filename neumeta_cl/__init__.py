"""neumeta_cl: continual learning with morphable networks."""

__version__ = "0.1.0"
