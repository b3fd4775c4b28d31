"""The implicit neural representation of weight space: coordinates (+ task) -> weight values.

One shared residual MLP reads the Fourier-encoded coordinates of a weight, a learned embedding of
its layer and a learned embedding of the task; one small linear output per layer returns the
weight (or, for a convolution, the whole k x k kernel of a unit pair).
"""

from __future__ import annotations

import torch
from torch import nn

from neumeta_cl.hypernet.coords import encode, encoded_dim


class ResidualBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(torch.relu(self.fc1(torch.relu(h))))


class WeightINR(nn.Module):
    def __init__(self, out_sizes: list[int], n_tasks: int, hidden: int, n_blocks: int, n_freqs: int,
                 layer_dim: int, task_dim: int, film: bool):
        super().__init__()
        self.n_freqs = n_freqs
        self.layer_emb = nn.Embedding(len(out_sizes), layer_dim)
        # One embedding per task, as separate parameters: old tasks' embeddings are frozen by
        # turning off their gradient, which an optimizer over one table could not do.
        self.task_emb = nn.ParameterList(nn.Parameter(torch.randn(task_dim)) for _ in range(n_tasks))
        self.stem = nn.Linear(encoded_dim(n_freqs) + 1 + layer_dim + task_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(n_blocks))
        # FiLM (Perez et al. 2018): the task also scales and shifts every block's features, so a
        # task can reshape the shared features rather than only nudge the first layer's input.
        self.film = nn.Linear(task_dim, 2 * hidden * n_blocks) if film else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)
        self.outputs = nn.ModuleList(nn.Linear(hidden, k) for k in out_sizes)

    def features(self, coords: torch.Tensor, is_bias: torch.Tensor, layer: torch.Tensor,
                 task: torch.Tensor) -> torch.Tensor:
        """Hidden features of every query row; ``task`` holds one task id per row."""
        table = torch.stack(list(self.task_emb))
        emb = table[task]
        x = torch.cat([encode(coords, self.n_freqs), is_bias, self.layer_emb(layer), emb], 1)
        h = self.stem(x)
        film = self.film(table)[task].chunk(2 * len(self.blocks), 1) if self.film is not None else None
        for i, block in enumerate(self.blocks):
            h = block(h)
            if film is not None:
                h = h * (1 + film[2 * i]) + film[2 * i + 1]
        return torch.relu(h)
