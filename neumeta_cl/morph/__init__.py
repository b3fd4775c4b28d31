"""Morph operators: ``op(net, ..., probe=batch) -> MorphResult(net, report, param_map)``, by name.

Every operator deep-copies the net and edits the copy, so a refused or failed morph leaves the
input untouched; refusals are ``MorphError`` (a ``UserError``) with one sentence saying why.
"""

from neumeta_cl.morph.deepen import deepen
from neumeta_cl.morph.permute import permute, permute_net
from neumeta_cl.morph.param_map import DimMap, ParamMap, ParamRule, remap_anchors
from neumeta_cl.morph.prune import prune
from neumeta_cl.morph.report import MorphError, MorphReport, MorphResult, Probe, count_params, flops_per_sample
from neumeta_cl.morph.swap import add_head, extend_classes, replace_block, set_activation
from neumeta_cl.morph.widen import widen
from neumeta_cl.registry import Registry

MORPHS: Registry = Registry("morph operator")
for _name, _op in [("widen", widen), ("deepen", deepen), ("prune", prune), ("add_head", add_head),
                   ("extend_classes", extend_classes), ("set_activation", set_activation), ("replace_block", replace_block),
                   ("permute", permute)]:
    MORPHS.register(_name)(_op)

__all__ = ["MORPHS", "MorphError", "MorphReport", "MorphResult", "Probe", "ParamMap", "ParamRule", "DimMap", "remap_anchors",
           "count_params", "flops_per_sample", "widen", "deepen", "prune", "add_head", "extend_classes",
           "set_activation", "replace_block", "permute", "permute_net"]
