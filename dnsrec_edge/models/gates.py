"""Data-aware gates (DNS-Rec): scale activations by a function of the input embedding.

The gates live in ``models`` rather than beside the supernet in ``search``: a searched and
pruned SASRec keeps its (narrowed) gates, so the plain model, its checkpoints and pruning use
them too, and ``models`` imports nothing above it.
"""

from __future__ import annotations

import torch
from torch import nn


class DataAwareGate(nn.Module):
    """``delta = gamma * sigmoid(W2 relu(W1 x0 + b1) + b2)``, multiplied onto an activation.

    Example::

        gate = DataAwareGate(d_in=64, hidden=16, d_out=256)
        f = f * gate(x0)   # f: (B, L, 256), x0: (B, L, 64)
    """

    def __init__(self, d_in: int, hidden: int, d_out: int, gamma: float = 2.0):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        self.gamma = gamma

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.sigmoid(self.fc2(torch.relu(self.fc1(x0))))
