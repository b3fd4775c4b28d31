"""neumeta_cl: continual learning with morphable networks."""

import warnings

# Avalanche imports qpsolvers (for GEM), which warns on import that it found no QP solver; we use
# none. Filtered here so that no entry point (CLI, scripts, notebooks) prints it.
warnings.filterwarnings("ignore", message="no QP solver found")

__version__ = "0.1.0"
