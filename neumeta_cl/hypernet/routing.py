"""Class-incremental use of per-task networks: which task does an input belong to?

Every experience of a class-incremental stream is a task of the generator, with a network over its
own classes. At test time no task label is given, so the networks' answers are combined into
scores over all classes, in one of three ways (``strategy.routing``):

- ``router``: a task classifier over all classes, slimmable so that it runs at the same width
  as the task networks (``strategies.task_classifier``), is trained on the current experience and a
  small memory (von Oswald et al. 2020, HNET+TIR, with a memory of real samples in place of their
  generative replay). Its softmax over the classes seen so far, ``p_r(c | x)``, and the task
  networks' softmaxes within their tasks, ``p_k(c | x)``, are multiplied and renormalised:
  ``p(c | x) ∝ p_r(c | x) p_k(c | x)`` for class ``c`` of task ``k`` (a product of experts, Hinton
  2002). Summed over a task's classes the router's factor is its task probability
  ``p(k | x)``, so the router says which task, and within the task both vote: the task network
  decides where the router is unsure, and the router covers a task network that is weak. A
  classifier trained on a stream with a small memory favours some tasks over others (the newest
  one, or the old ones); after each experience one offset per seen class is fitted on the memory
  for every width (``fit_class_offsets``, in the manner of BiC's bias correction, Wu et al. 2019)
  and added to the head's bias.
- ``calibrated``: each task network's logits get a scale and a shift, ``a_k z_k + b_k``, fitted on
  the memory so that one softmax over all of them is right (2 numbers per task).
- ``entropy``: the task network with the lowest predictive entropy answers (von Oswald et al.'s
  HNET+ENT); no memory.

The functions here are the math; ``TaskRouter`` is the deployable module over generated networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ROUTINGS = ("router", "calibrated", "entropy")


def predictive_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row's softmax."""
    logp = logits.log_softmax(1)
    return -(logp.exp() * logp).sum(1)


def _scatter(scores: Sequence[torch.Tensor], classes: Sequence[Sequence[int]], n_classes: int) -> torch.Tensor:
    """Per-task scores (rows x that task's classes) placed into rows x ``n_classes``; -inf elsewhere."""
    out = scores[0].new_full((len(scores[0]), n_classes), float("-inf"))
    for s, cls in zip(scores, classes):
        out[:, torch.as_tensor(list(cls), device=s.device)] = s
    return out


def route_by_entropy(logits: Sequence[torch.Tensor], classes: Sequence[Sequence[int]], n_classes: int) -> torch.Tensor:
    """Scores over all ``n_classes``: each row takes the log-probabilities of the task whose network
    is most certain (``logits[k]`` covers the global classes ``classes[k]``); every other class
    gets -inf, so the argmax is that task's prediction. Ties go to the earlier task."""
    entropy = torch.stack([predictive_entropy(lg) for lg in logits], 1)
    chosen = entropy.argmin(1)
    out = logits[0].new_full((len(chosen), n_classes), float("-inf"))
    for k, (lg, cls) in enumerate(zip(logits, classes)):
        rows = (chosen == k).nonzero()
        if len(rows):
            cols = torch.as_tensor(list(cls), device=lg.device)
            out[rows, cols] = lg[rows[:, 0]].log_softmax(1)
    return out


def _seen(classes: Sequence[Sequence[int]], device) -> torch.Tensor:
    """Every task's classes, task by task: the router's columns that routing reads."""
    return torch.as_tensor([c for cls in classes for c in cls], device=device)


def _fit_cross_entropy(params: list[torch.Tensor], scores, target: torch.Tensor, steps: int) -> None:
    """L-BFGS on ``params`` (in place) against the cross-entropy of ``scores()`` with ``target``."""
    opt = torch.optim.LBFGS(params, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(scores(), target)
        loss.backward()
        return loss

    opt.step(closure)


def _router_log_probs(router_logits: torch.Tensor, classes: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ...]:
    """log p_r(c | x), the router's log-softmax over the seen classes, split task by task."""
    seen = _seen(classes, router_logits.device)
    return router_logits[:, seen].log_softmax(1).split([len(cls) for cls in classes], 1)


def task_log_probs(router_logits: torch.Tensor, classes: Sequence[Sequence[int]]) -> torch.Tensor:
    """log p(k | x) = log sum_{c in classes[k]} softmax(router_logits over the seen classes)_c."""
    return torch.stack([part.logsumexp(1) for part in _router_log_probs(router_logits, classes)], 1)


def fit_class_offsets(router_logits: torch.Tensor, y: torch.Tensor, classes: Sequence[Sequence[int]],
                      steps: int = 100) -> torch.Tensor:
    """One offset per seen class, ``b``, minimising the cross-entropy of ``router_logits + b`` over
    the seen classes on labelled samples (the memory): L-BFGS from 0, centred (a common shift changes
    nothing); 0 for classes not seen yet. Added to the head's bias. A per-task offset (BiC's bias
    correction, Wu et al. 2019, per task) is the special case of equal offsets within a task; one per
    class also corrects the router's bias between classes of one task, which moves ``p(k | x)`` too."""
    seen = _seen(classes, router_logits.device)
    lookup = torch.full((int(router_logits.shape[1]),), -1, dtype=torch.long, device=router_logits.device)
    lookup[seen] = torch.arange(len(seen), device=router_logits.device)
    target = lookup[y.to(router_logits.device)]
    logits = router_logits.detach()[:, seen]
    b = torch.zeros(len(seen), device=logits.device, requires_grad=True)
    _fit_cross_entropy([b], lambda: logits + b, target, steps)
    out = torch.zeros(router_logits.shape[1], device=logits.device)
    out[seen] = (b - b.mean()).detach()
    return out


def route_by_router(router_logits: torch.Tensor, logits: Sequence[torch.Tensor], classes: Sequence[Sequence[int]],
                    n_classes: int) -> torch.Tensor:
    """Log-probabilities over all ``n_classes``: ``log p_r(c | x) + log_softmax(logits[k])_c`` for
    class ``c`` of task ``k``, renormalised (the router's softmax over the seen classes times task
    ``k``'s softmax over its own); -inf for classes no task has."""
    router_logp = _router_log_probs(router_logits, classes)
    scores = _scatter([r + lg.log_softmax(1) for r, lg in zip(router_logp, logits)], classes, n_classes)
    return scores.log_softmax(1)


def route_calibrated(logits: Sequence[torch.Tensor], classes: Sequence[Sequence[int]], n_classes: int,
                     scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Scores over all ``n_classes``: ``scale[k] * logits[k] + shift[k]`` side by side."""
    return _scatter([scale[k] * lg + shift[k] for k, lg in enumerate(logits)], classes, n_classes)


def fit_calibration(logits: Sequence[torch.Tensor], y: torch.Tensor, classes: Sequence[Sequence[int]],
                    n_classes: int, steps: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task scale and shift minimising the cross-entropy of ``route_calibrated`` on labelled
    samples (the memory); L-BFGS from scale 1, shift 0."""
    logits = [lg.detach() for lg in logits]
    scale = torch.ones(len(logits), requires_grad=True)
    shift = torch.zeros(len(logits), requires_grad=True)
    _fit_cross_entropy([scale, shift], lambda: route_calibrated(logits, classes, n_classes, scale, shift), y, steps)
    return scale.detach(), shift.detach()


def route(routing: str, logits: Sequence[torch.Tensor], classes: Sequence[Sequence[int]], n_classes: int, *,
          router_logits: torch.Tensor | None = None, calibration: torch.Tensor | None = None) -> torch.Tensor:
    """Scores over all ``n_classes`` from every task network's ``logits`` by the ``routing`` rule;
    ``calibration`` holds one (scale, shift) row per task."""
    if routing == "router":
        return route_by_router(router_logits, logits, classes, n_classes)
    if routing == "calibrated":
        return route_calibrated(logits, classes, n_classes, calibration[:, 0], calibration[:, 1])
    return route_by_entropy(logits, classes, n_classes)


class TaskRouter(nn.Module):
    """An ordinary module over every seen task's network (and, for ``routing="router"``, the
    task-inference network): ``router(x)`` predicts global classes without a task label (``t`` is
    accepted and ignored, like a single-head network's)."""

    def __init__(self, nets: Sequence[nn.Module], classes: Sequence[Sequence[int]], n_classes: int,
                 routing: str = "entropy", router: nn.Module | None = None, calibration: torch.Tensor | None = None):
        super().__init__()
        if len(nets) != len(classes) or not nets:
            raise ValueError("TaskRouter needs one class list per network, and at least one network.")
        if (routing == "router") != (router is not None) or (routing == "calibrated") != (calibration is not None):
            raise ValueError("routing='router' takes a router network, 'calibrated' a calibration, 'entropy' neither.")
        self.nets = nn.ModuleList(nets)
        self.router = router
        self.classes = [list(map(int, c)) for c in classes]
        self.n_classes, self.routing = int(n_classes), routing
        self.register_buffer("calibration", calibration)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return route(self.routing, [net(x) for net in self.nets], self.classes, self.n_classes,
                     router_logits=None if self.router is None else self.router(x), calibration=self.calibration)

