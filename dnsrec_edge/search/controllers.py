"""Architecture controllers: alpha (width candidates, per block or shared) and beta (depth).

Mixing weights are ``softmax(logits / T)`` with a temperature ``T`` annealed from 1.0 to 0.01
over the search, so the mixture hardens into the architecture that is finally selected.
With ``gumbel=True`` the training-time weights are Gumbel-softmax samples at the same
temperature (evaluation always uses the plain softmax).

Example::

    ctrl = ArchController(n_blocks=4, n_attn=3, n_ffn=3)
    ctrl.set_temperature(anneal(step, total_steps))
    w = ctrl.weights()            # w.attn (4, 3), w.ffn (4, 3), w.depth (4,)
    choice = ctrl.choice()        # argmax of each controller
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dnsrec_edge.search.space import Choice


def anneal(step: int, total: int, start: float = 1.0, end: float = 0.01) -> float:
    """Exponential temperature schedule: ``start`` at step 0, ``end`` at step ``total``."""
    if total <= 0:
        return end
    progress = min(max(step / total, 0.0), 1.0)
    return start * (end / start) ** progress


@dataclass
class MixWeights:
    """Mixing weights: ``attn`` (N, A), ``ffn`` (N, F), ``depth`` (N,); ``hard`` if one-hot."""

    attn: torch.Tensor
    ffn: torch.Tensor
    depth: torch.Tensor
    hard: bool = False

    @classmethod
    def one_hot(cls, choice: Choice, n_blocks: int, n_attn: int, n_ffn: int) -> MixWeights:
        """One-hot weights of a hard choice; blocks past its depth get the first candidates."""
        attn, ffn = torch.zeros(n_blocks, n_attn), torch.zeros(n_blocks, n_ffn)
        for i in range(n_blocks):
            a, f = choice.blocks[i] if i < choice.depth else (0, 0)
            attn[i, a], ffn[i, f] = 1.0, 1.0
        depth = torch.zeros(n_blocks)
        depth[choice.depth - 1] = 1.0
        return cls(attn, ffn, depth, hard=True)


class ArchController(nn.Module):
    """Logits of the width candidates per block (or one shared row) and of the depth."""

    def __init__(
        self, n_blocks: int, n_attn: int, n_ffn: int, shared: bool = False, gumbel: bool = False
    ):
        super().__init__()
        rows = 1 if shared else n_blocks
        self.n_blocks, self.shared, self.gumbel = n_blocks, shared, gumbel
        self.alpha_attn = nn.Parameter(torch.zeros(rows, n_attn))
        self.alpha_ffn = nn.Parameter(torch.zeros(rows, n_ffn))
        self.beta = nn.Parameter(torch.zeros(n_blocks))
        self.register_buffer("temperature", torch.tensor(1.0))

    def set_temperature(self, value: float) -> None:
        self.temperature.fill_(float(value))

    def _mix(self, logits: torch.Tensor) -> torch.Tensor:
        t = float(self.temperature)
        if self.gumbel and self.training:
            return nn.functional.gumbel_softmax(logits, tau=t, hard=False, dim=-1)
        return torch.softmax(logits / t, dim=-1)

    def weights(self) -> MixWeights:
        """Mixing weights for a forward pass (Gumbel samples when enabled and training)."""
        attn = self._mix(self.alpha_attn).expand(self.n_blocks, -1)  # (N, A)
        ffn = self._mix(self.alpha_ffn).expand(self.n_blocks, -1)  # (N, F)
        return MixWeights(attn, ffn, self._mix(self.beta))

    def probs(self) -> MixWeights:
        """The tempered softmax of each controller (no sampling): what the cost is taken over."""
        t = self.temperature
        attn = torch.softmax(self.alpha_attn / t, -1).expand(self.n_blocks, -1)  # (N, A)
        ffn = torch.softmax(self.alpha_ffn / t, -1).expand(self.n_blocks, -1)  # (N, F)
        return MixWeights(attn, ffn, torch.softmax(self.beta / t, -1))

    def log_probs(self) -> MixWeights:
        """The logs of :meth:`probs`, computed stably: at a low temperature a probability
        can underflow to 0 while its log stays finite."""
        t = self.temperature
        attn = torch.log_softmax(self.alpha_attn / t, -1).expand(self.n_blocks, -1)  # (N, A)
        ffn = torch.log_softmax(self.alpha_ffn / t, -1).expand(self.n_blocks, -1)  # (N, F)
        return MixWeights(attn, ffn, torch.log_softmax(self.beta / t, -1))

    def choice(self) -> Choice:
        """The argmax architecture of the current logits."""
        depth = int(self.beta.argmax()) + 1
        attn = self.alpha_attn.argmax(-1).expand(self.n_blocks)
        ffn = self.alpha_ffn.argmax(-1).expand(self.n_blocks)
        return Choice(depth, tuple((int(attn[i]), int(ffn[i])) for i in range(depth)))

    def log_prob(self, choice: Choice) -> float:
        """Log-probability of ``choice`` under the current (tempered) softmax."""
        t = float(self.temperature)
        la = torch.log_softmax(self.alpha_attn.detach() / t, -1).expand(self.n_blocks, -1)
        lf = torch.log_softmax(self.alpha_ffn.detach() / t, -1).expand(self.n_blocks, -1)
        total = float(torch.log_softmax(self.beta.detach() / t, -1)[choice.depth - 1])
        for i, (a, f) in enumerate(choice.blocks):
            total += float(la[i, a] + lf[i, f])
        return total

    def snapshot(self) -> dict[str, list]:
        """Logits and tempered probabilities as plain lists, for the search log."""
        with torch.no_grad():
            w = self.probs()
            return {
                "alpha_attn": self.alpha_attn.tolist(),
                "alpha_ffn": self.alpha_ffn.tolist(),
                "beta": self.beta.tolist(),
                "p_attn": w.attn.tolist(),
                "p_ffn": w.ffn.tolist(),
                "p_depth": w.depth.tolist(),
            }
