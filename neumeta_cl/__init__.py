"""neumeta_cl: continual learning with morphable networks."""

import warnings

# Avalanche imports qpsolvers (for GEM), which warns on import that it found no QP solver; we use
# none. Filtered here so that no entry point (CLI, scripts, notebooks) prints it.
warnings.filterwarnings("ignore", message="no QP solver found")

__version__ = "0.1.0"


def __getattr__(name):
    # ``neumeta_cl.interpolate(a, b, t, path=...)``: imported on first use, so the CLI starts fast.
    if name == "interpolate":
        from neumeta_cl.landscape import interpolate

        return interpolate
    raise AttributeError(f"module 'neumeta_cl' has no attribute {name!r}")
