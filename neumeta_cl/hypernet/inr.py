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
        h = self.stem_of(torch.cat([encode(coords, self.n_freqs), is_bias], 1), layer, task, table)
        film = self.film(table)[task].chunk(2 * len(self.blocks), 1) if self.film is not None else None
        for i, block in enumerate(self.blocks):
            h = block(h)
            if film is not None:
                h = h * (1 + film[2 * i]) + film[2 * i + 1]
        return torch.relu(h)

    def stem_of(self, position: torch.Tensor, layer: torch.Tensor, task: torch.Tensor,
                table: torch.Tensor) -> torch.Tensor:
        """``stem(cat([position, layer_emb[layer], table[task]]))``, computed as position's product
        plus one row per (layer, task) pair: the embeddings' part of the product is the same for
        every query of a layer and task, so it is computed once per pair, not once per query (and
        its backward reaches the embeddings through that small table)."""
        n = position.shape[1]
        w = self.stem.weight
        per_layer = self.layer_emb.weight @ w[:, n:n + self.layer_emb.embedding_dim].T  # [L, hidden]
        per_task = table @ w[:, n + self.layer_emb.embedding_dim:].T + self.stem.bias  # [T, hidden]
        pair = (per_layer[:, None, :] + per_task[None, :, :]).flatten(0, 1)  # [L * T, hidden]
        out = torch.nn.functional.linear(position, w[:, :n])
        return out + pair[layer * len(table) + task].to(out.dtype)  # in the product's precision (autocast)
