"""Fisher-weighted interpolation (Matena & Raffel, NeurIPS 2022, "Merging Models with Fisher Weighting").

Each parameter is averaged with the weight its own diagonal Fisher information gives it:

    theta(t) = ((1 - t) F_A theta_A + t F_B theta_B) / ((1 - t) F_A + t F_B)

(elementwise; where both Fishers vanish the plain line is used), with the empirical diagonal Fisher
of the model's predictive distribution, per example as in the paper:

    F = 1/N sum_i E_{y ~ p_theta(y | x_i)} [ (d/d theta log p_theta(y | x_i))^2 ]

estimated with one label sampled from the model per example (unbiased), eval mode. ``eps`` is
added to both Fishers (the paper's fisher floor) so that units no example moves still interpolate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neumeta_cl.landscape.path import Path, lerp
from neumeta_cl.morph.report import mode


def diagonal_fisher(net: nn.Module, x: torch.Tensor, t: torch.Tensor | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-example diagonal Fisher of ``net`` on inputs ``x`` (one label per example sampled from the
    model; one backward pass per example, so keep ``x`` to a few hundred or thousand samples)."""
    t = t if t is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
    g = torch.Generator().manual_seed(int(seed))
    params = [p for p in net.parameters()]
    fisher = [torch.zeros_like(p) for p in params]
    with mode(net, False):
        with torch.no_grad():
            probs = torch.cat([F.softmax(net(x[s:s + 1024], t[s:s + 1024]), 1) for s in range(0, len(x), 1024)])
        labels = torch.multinomial(probs.cpu(), 1, generator=g).squeeze(1).to(x.device)
        with torch.enable_grad():
            for i in range(len(x)):
                log_p = F.log_softmax(net(x[i:i + 1], t[i:i + 1]), 1)[0, labels[i]]
                for f, gr in zip(fisher, torch.autograd.grad(log_p, params, allow_unused=True)):
                    if gr is not None:
                        f += gr.detach() ** 2
    return {n: f / len(x) for (n, _), f in zip(net.named_parameters(), fisher)}


def fisher_interpolate(a: torch.Tensor, b: torch.Tensor, fa: torch.Tensor, fb: torch.Tensor, t: float,
                       eps: float = 1e-8) -> torch.Tensor:
    """((1 - t) F_A a + t F_B b) / ((1 - t) F_A + t F_B), with both Fishers floored at ``eps``."""
    fa, fb = fa + eps, fb + eps
    return ((1 - t) * fa * a + t * fb * b) / ((1 - t) * fa + t * fb)


class FisherPath(Path):
    """Fisher-weighted interpolation between A and B (buffers interpolated linearly)."""

    name = "fisher"

    def __init__(self, a: nn.Module, b: nn.Module, fisher_a: dict, fisher_b: dict, eps: float = 1e-8):
        super().__init__(a, b)
        self.fa, self.fb, self.eps = fisher_a, fisher_b, eps

    def params(self, t: float) -> dict[str, torch.Tensor]:
        t = float(t)
        if t in (0.0, 1.0):  # exact endpoints (no division)
            return {n: lerp(v, self.pb[n], t) for n, v in self.pa.items()}
        return {n: fisher_interpolate(v, self.pb[n], self.fa[n], self.fb[n], t, self.eps) for n, v in self.pa.items()}

    def describe(self) -> dict:
        return {"path": "fisher", "eps": self.eps}


__all__ = ["diagonal_fisher", "fisher_interpolate", "FisherPath"]
