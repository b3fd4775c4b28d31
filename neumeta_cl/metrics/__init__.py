"""Continual-learning metrics as pure functions (DESIGN.md, "Metric definitions").

transfer:   ACC, BWT, FWT (Lopez-Paz & Ranzato 2017), forgetting (Chaudhry et al. 2018)
adaptation: learning-curve area (Chaudhry et al. 2019), steps/seconds to 95% of final accuracy
"""

from neumeta_cl.metrics.adaptation import (
    learning_curve_area,
    seconds_to_fraction,
    steps_to_fraction,
)
from neumeta_cl.metrics.transfer import (
    CONVENTIONS,
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
    gem_code_convention,
    summarize,
)

__all__ = [
    "CONVENTIONS",
    "average_accuracy",
    "backward_transfer",
    "forward_transfer",
    "forgetting",
    "gem_code_convention",
    "summarize",
    "learning_curve_area",
    "steps_to_fraction",
    "seconds_to_fraction",
]
