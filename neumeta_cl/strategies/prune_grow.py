"""``prune_grow``: PackNet (Mallya & Lazebnik 2018) with units instead of single weights.

After each experience:
1. score the experience's free hidden units with Fisher pruning scores on its training data;
2. keep the top ``keep`` fraction of the free units of every layer and *prune* the rest: their
   outgoing weights are cut to zero and their incoming weights re-drawn, so they return to the
   free pool as fresh capacity (*grow*) for the next experience;
3. fine-tune the kept units for ``retrain_steps`` steps (PackNet's retraining after pruning);
4. freeze them: from now on their incoming weights and bias, and the experience's head (or its
   class rows of a shared head), never change.

Frozen units only read frozen units of the layer below (cut connections stay zero because the
rows holding them are frozen), so with task labels an old experience's function is exactly
preserved. Free units may read frozen ones: that is forward transfer. BatchNorm statistics are
not per experience, so use it with the MLP.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from neumeta_cl.errors import ConfigError
from neumeta_cl.morph.prune import fisher_unit_scores
from neumeta_cl.nets.evaluation import tensor_accuracy
from neumeta_cl.nets.heads import MultiHead
from neumeta_cl.morph.report import MorphError
from neumeta_cl.protocol import Plugin, StrategyReport
from neumeta_cl.strategies.base import ContinualModule
from neumeta_cl.strategies.optim import OptimConfig


def hidden_linears(net) -> list[torch.nn.Module]:
    return [block[0] for block in net.blocks]


class UnitPacking(Plugin):
    def __init__(self, keep: float = 0.3, retrain_steps: int = 100, batch_size: int = 128, seed: int = 0):
        if not 0 < keep < 1:
            raise ConfigError(f"strategy.keep must lie strictly between 0 and 1, got {keep}.")
        if retrain_steps < 0:
            raise ConfigError(f"strategy.retrain_steps must be >= 0, got {retrain_steps}.")
        self.keep, self.retrain_steps, self.batch_size = keep, retrain_steps, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.frozen: dict[str, torch.Tensor] = {}  # parameter name -> bool mask of entries that never change
        self.values: dict[str, torch.Tensor] = {}  # their frozen values
        self.owner: list[torch.Tensor] | None = None  # per hidden layer: experience owning each unit, -1 = free
        self.history: list[dict] = []

    # -- masks ---------------------------------------------------------------------------------
    def _apply_masks(self, module, grads: bool) -> None:
        params = dict(module.net.named_parameters())
        for name, mask in self.frozen.items():
            p = params[name]
            mask = mask.to(p.device)  # no-op unless restored from a checkpoint onto another device
            if grads and p.grad is not None:
                p.grad[mask] = 0
            elif not grads:
                with torch.no_grad():
                    p[mask] = self.values[name].to(p.device)[mask]

    def after_backward(self, module) -> None:
        self._apply_masks(module, grads=True)

    def after_step(self, module) -> None:
        self._apply_masks(module, grads=False)  # momentum or weight decay must not move frozen weights

    def _freeze(self, name: str, param: torch.Tensor, mask: torch.Tensor) -> None:
        old = self.frozen.get(name, torch.zeros_like(mask))
        self.frozen[name] = old.to(mask.device) | mask
        self.values[name] = param.detach().clone()

    def remap(self, param_map) -> None:
        if self.owner is not None:  # before the first experience ends nothing is frozen yet
            raise MorphError("strategy=prune_grow cannot follow a morph of its packed units once an experience "
                             "is frozen; schedule morphs at experience 0 only, or use grow_ewc.")

    def state_dict(self) -> dict:
        return {"frozen": self.frozen, "values": self.values, "owner": self.owner, "history": self.history,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.frozen, self.values, self.owner = dict(state["frozen"]), dict(state["values"]), state["owner"]
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])

    # -- the morph between experiences ----------------------------------------------------------
    def after_training(self, run) -> None:
        module, experience = run.strategy, run.experience
        t0 = time.perf_counter()
        net = module.net
        linears = hidden_linears(net)
        device = next(net.parameters()).device
        if self.owner is None:
            self.owner = [torch.full((lin.out_features,), -1, dtype=torch.long) for lin in linears]
        x, y, t = (a.to(device) for a in (experience.x, experience.y, experience.t))
        scores = fisher_unit_scores(net, list(range(len(linears))), (x, y, t))
        kept, released = [], []
        for layer, owner in enumerate(self.owner):
            free = (owner == -1).nonzero().squeeze(1)
            n_keep = max(1, round(self.keep * len(free)))
            order = free[scores[layer].cpu()[free].argsort(descending=True)]
            kept.append(order[:n_keep])
            released.append(order[n_keep:])
        heads = self._heads(net, experience)
        self._check_rows_free(net, heads, experience)
        acc_before = tensor_accuracy(net, x, y, t)
        with torch.no_grad():
            for layer, lin in enumerate(linears):  # release: re-draw incoming weights, cut outgoing ones
                r = released[layer]
                fresh = torch.empty(len(r), lin.in_features)
                torch.nn.init.kaiming_uniform_(fresh, a=5 ** 0.5, generator=self.generator)
                lin.weight[r] = fresh.to(lin.weight)
                lin.bias[r] = 0
                readers = [linears[layer + 1]] if layer + 1 < len(linears) else [h for h, _ in self._all_heads(net)]
                for reader in readers:
                    reader.weight[:, r] = 0
        acc_pruned = tensor_accuracy(net, x, y, t)
        self._retrain(module, x, y, t, kept, released, heads)
        for layer, lin in enumerate(linears):
            mask = torch.zeros_like(lin.weight, dtype=torch.bool)
            mask[kept[layer]] = True
            self._freeze(self._name(net, lin, "weight"), lin.weight, mask)
            bmask = torch.zeros_like(lin.bias, dtype=torch.bool)
            bmask[kept[layer]] = True
            self._freeze(self._name(net, lin, "bias"), lin.bias, bmask)
            self.owner[layer][kept[layer]] = experience.index
        for head, rows in heads:
            for what in ("weight", "bias"):
                p = getattr(head, what)
                mask = torch.zeros_like(p, dtype=torch.bool)
                mask[rows] = True
                self._freeze(self._name(net, head, what), p, mask)
        self.history.append({"experience": experience.index, "acc_before_prune": acc_before, "kept": [len(k) for k in kept],
                             "released": [len(r) for r in released], "acc_after_prune": acc_pruned,
                             "acc_after_retrain": tensor_accuracy(net, x, y, t),
                             "free_after": [int((o == -1).sum()) for o in self.owner],
                             "ms": 1000 * (time.perf_counter() - t0)})

    def _all_heads(self, net):
        if isinstance(net.head, MultiHead):
            return [(h, slice(None)) for h in net.head.heads]
        return [(net.head.linear, slice(None))]

    def _heads(self, net, experience):
        """The output rows this experience owns: its whole head, or its classes' rows of a shared head."""
        if isinstance(net.head, MultiHead):
            return [(net.head.heads[experience.task_label], slice(None))]
        return [(net.head.linear, torch.tensor(experience.classes))]

    def _check_rows_free(self, net, heads, experience) -> None:
        """An experience whose output rows an earlier one froze could never have learned (a shared class)."""
        for head, rows in heads:
            frozen = self.frozen.get(self._name(net, head, "bias"))
            if frozen is None:
                continue
            frozen = frozen.cpu()
            taken = torch.arange(len(frozen))[rows][frozen[rows]].tolist()
            if taken:
                raise ConfigError(f"strategy=prune_grow: experience {experience.index} has classes {taken} whose head rows "
                                  f"an earlier experience froze, so it cannot learn them; it needs disjoint classes "
                                  f"per experience or task labels (benchmark.scenario=task).")

    @staticmethod
    def _name(net, module, what: str) -> str:
        return next(n for n, m in net.named_modules() if m is module) + "." + what

    def _retrain(self, module, x, y, t, kept, released, heads) -> None:
        """Fine-tune only the kept units' incoming weights and this experience's head rows."""
        if self.retrain_steps == 0:
            return
        net = module.net
        linears = hidden_linears(net)
        trainable = {}
        for layer, lin in enumerate(linears):
            m = torch.zeros_like(lin.weight, dtype=torch.bool)
            m[kept[layer]] = True
            if layer > 0:
                m[:, released[layer - 1]] = False  # cut connections stay cut
            b = torch.zeros_like(lin.bias, dtype=torch.bool)
            b[kept[layer]] = True
            trainable[lin.weight], trainable[lin.bias] = m, b
        for head, rows in heads:
            m = torch.zeros_like(head.weight, dtype=torch.bool)
            m[rows] = True
            m[:, released[-1]] = False
            b = torch.zeros_like(head.bias, dtype=torch.bool)
            b[rows] = True
            trainable[head.weight], trainable[head.bias] = m, b
        params = list(trainable)
        opt = module.optim.for_experience(module.experience_index).build(params)
        net.train()
        with torch.enable_grad():
            for _ in range(self.retrain_steps):
                idx = torch.randint(len(y), (self.batch_size,), generator=self.generator).to(x.device)
                loss = F.cross_entropy(net(x[idx], t[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for p in params:
                    p.grad[~trainable[p]] = 0
                self._apply_masks(module, grads=True)
                before = {p: p.detach().clone() for p in params}
                opt.step()
                with torch.no_grad():
                    for p in params:  # momentum must not move what is not trainable
                        p[~trainable[p]] = before[p][~trainable[p]]
        net.zero_grad(set_to_none=True)


class PruneGrow(ContinualModule):
    def __init__(self, net, optim: OptimConfig, *, batch_size: int = 128, seed: int = 0, keep: float = 0.3,
                 retrain_steps: int = 100):
        self.packing = UnitPacking(keep, retrain_steps, batch_size, seed)
        super().__init__(net, optim, batch_size=batch_size, seed=seed, parts=[self.packing])

    def report(self) -> StrategyReport:
        """The prune-and-freeze step as a morph record, like the scheduled morphs' reports."""
        last = self.packing.history[-1] if self.packing.history else None
        if last is None or last["experience"] != self.experience_index:
            return StrategyReport()
        from neumeta_cl.morph import count_params, flops_per_sample

        params, flops = count_params(self.net), flops_per_sample(self.net, task=0 if self.net_has_heads() else None)
        return StrategyReport(morphs=[{
            "at": f"end of experience {last['experience']}", "op": "prune_grow", "detail": last,
            "wall_ms": last["ms"], "params_before": params, "params_after": params,  # units are masked, not removed
            "flops_before": flops, "flops_after": flops, "preservation_error": None, "claims_preservation": False,
            "acc_seen_before": None, "acc_seen_after": None,
            "acc_experience_before": last["acc_before_prune"], "acc_experience_after": last["acc_after_retrain"],
        }])

    def net_has_heads(self) -> bool:
        return isinstance(self.net.head, MultiHead)
