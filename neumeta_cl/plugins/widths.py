"""After every experience, evaluate every seen task's generated network at a list of widths.

The record (``experiences[i]["widths_eval"]`` in results.json, ``width/...`` and the
``accuracy_by_width`` table in W&B) holds, per width, the accuracy on each seen task's test data
and the median time to generate that task's network. On a class-incremental stream they are the
accuracy of the ``TaskRouter`` over every seen task's network (the task is inferred) and the
time to generate all of them. A width held out of training is marked ``unseen``. With a task
classifier (``routing: router``) the sweep also deploys each width's parameter count as a budget
(``generator.router(budget=...)``: the classifier first, then the task networks; ``hypernet.budget``)
and records it in ``budget_eval``. The generator is saved next to results.json (``generator.pt``)
after every experience.
"""

from __future__ import annotations

import time

import numpy as np

from neumeta_cl.errors import ConfigError
from neumeta_cl.nets.evaluation import tensor_accuracy
from neumeta_cl.protocol import Plugin


class WidthSweep(Plugin):
    def __init__(self, fractions: list[float], unseen: list[float] | None = None, samples: int = 1,
                 noise: float = 0.0, eval_batch_size: int = 1024, checkpoint=None):
        self.checkpoint = checkpoint
        self.unseen = [float(f) for f in (unseen or [])]
        self.fractions = sorted({float(f) for f in [*fractions, *self.unseen]})
        self.samples, self.noise, self.eval_batch_size = samples, noise, eval_batch_size

    def after_experience(self, run) -> None:
        generator = run.strategy.generator
        seen = run.stream.test[: run.index + 1]
        rows = []
        for f in self.fractions:
            widths = list(generator.layout.at_fraction(f))
            accs, ms = [], []
            if generator.infers_task:  # class-incremental: one router over every seen task
                t0 = time.perf_counter()
                net = generator.router(widths, samples=self.samples, noise=self.noise)
                ms.append((time.perf_counter() - t0) * 1e3)
                accs = self._accuracies(run, net, seen)
            else:
                for exp in seen:
                    t0 = time.perf_counter()
                    net = generator.generate(exp.task_label, widths, samples=self.samples, noise=self.noise)
                    ms.append((time.perf_counter() - t0) * 1e3)
                    accs.append(tensor_accuracy(net, exp.x, exp.y, batch_size=self.eval_batch_size,
                                                device=run.device))
            rows.append({"fraction": f, "widths": widths, "unseen": any(abs(f - u) < 1e-9 for u in self.unseen),
                         "params": sum(p.numel() for p in net.parameters()), "accuracy": accs,
                         "acc_seen": float(np.mean(accs)), "gen_ms": float(np.median(ms))})
        run.record.widths_eval = rows
        if generator.infers_task and generator.task_classifier is not None:
            run.record.budget_eval = [r for r in (self._budget_row(run, generator, seen, row) for row in rows) if r]
        if self.checkpoint is not None:  # the generator after every experience: deployable at any width
            from neumeta_cl.hypernet.generator import save_generator

            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_generator(generator, self.checkpoint)
            run.record.generator = str(self.checkpoint)

    def _budget_row(self, run, generator, seen, uniform: dict) -> dict | None:
        """The deployment that spends the uniform width's parameters as ``router(budget=...)`` splits them
        (None where they are too few for any split)."""
        budget = {"params": uniform["params"]}
        try:
            net = generator.router(budget=budget, samples=self.samples, noise=self.noise)
        except ConfigError:  # below the smallest split (a width under the classifier's narrowest trained one)
            return None
        accs = self._accuracies(run, net, seen)
        return {"fraction": uniform["fraction"], "budget": budget, "classifier_widths": list(net.router.widths),
                "task_widths": list(net.nets[0].widths), "params": sum(p.numel() for p in net.parameters()),
                "accuracy": accs, "acc_seen": float(np.mean(accs))}

    def _accuracies(self, run, router, seen) -> list[float]:
        """A class-incremental deployment's accuracy on each seen task's test data."""
        return [tensor_accuracy(router, exp.x, exp.y, batch_size=self.eval_batch_size, device=run.device)
                for exp in seen]
