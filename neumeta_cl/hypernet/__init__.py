"""NeuMeta's hypernetwork: weight coordinates, the INR over them, TSP smoothing, the generator,
and what fits a deployment budget.

    from neumeta_cl.hypernet import load_generator
    g = load_generator("runs/<run>/generator.pt")
    net = g.generate(task=2, widths=[20, 40])         # an ordinary nn.Module, no hypernetwork needed
    net = g.generate(task=2, budget={"params": 5000})  # the widest network within a budget
    net = g.router(widths=[20, 40])                   # class-incremental runs: infers the task itself
    net = g.router(budget={"params": 8000})           # ... within a budget, the task classifier first
"""

from neumeta_cl.hypernet.generator import NeuMetaGenerator, Request, load_generator, save_generator
from neumeta_cl.hypernet.layout import TargetLayout
from neumeta_cl.hypernet.routing import TaskRouter, route_by_entropy

__all__ = ["TaskRouter", "NeuMetaGenerator", "Request", "TargetLayout", "load_generator", "route_by_entropy",
           "save_generator"]
