"""A folder of finished supernet warm-ups, reused by searches that differ only in their budget.

The warm-up (:mod:`search.loop`) trains the shared weights while the controllers stay still,
so it does not depend on the budget: a second budget on the same data, space, settings and
baseline can start where the first one's warm-up ended, and its search then runs exactly as
it would have. An entry is ``{key}.pt`` (weights, the weight optimizer's state, the loop's
counters; loaded with ``weights_only=True``) beside ``{key}.sha256``; an entry whose bytes do
not match its checksum is ignored. Entries are written atomically; a racing writer's entry
is as good as ours.

Example::

    key = warmup_key(dataset.fingerprint, space, config, baseline_valid, state_digest(model))
    state = load_warmup(folder, key, model, optimizer)  # None: train the warm-up
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from dnsrec_edge import __version__
from dnsrec_edge.fsio import atomic_write_bytes, atomic_write_text, sha256_file

log = logging.getLogger(__name__)


def warmup_key(
    fingerprint: str,
    space: Any,
    config: Any,
    baseline_valid: float | None,
    start: str,
) -> str:
    """What names an entry: the data, the search space, every search setting, the baseline's
    validation NDCG@10 (the warm-up's target), the digest of the starting weights (see
    :func:`state_digest`: a start inherited from a baseline differs) and the tool and torch
    versions."""
    text = json.dumps(
        {
            "start": start,
            "dataset": fingerprint,
            "space": space.to_dict(),
            "config": asdict(config) | {"threads": None},  # threads do not change the result
            "baseline_valid": baseline_valid,
            "versions": [__version__, torch.__version__],
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def state_digest(model: torch.nn.Module) -> str:
    """sha256 over the names and bytes of ``model``'s state, in order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_warmup(
    folder: str | Path,
    key: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
) -> Path:
    """Write the entry ``key``: ``model``'s and ``optimizer``'s state and the loop's ``state``
    (plain numbers and lists)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}
    torch.save(payload, buffer)
    path = atomic_write_bytes(folder / f"{key}.pt", buffer.getvalue())
    atomic_write_text(folder / f"{key}.sha256", sha256_file(path) + "\n")
    return path


def load_warmup(
    folder: str | Path, key: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """Load the entry ``key`` into ``model`` and ``optimizer``; its loop ``state``, or None
    when there is no intact entry."""
    path, digest = Path(folder) / f"{key}.pt", Path(folder) / f"{key}.sha256"
    if not (path.is_file() and digest.is_file()):
        return None
    if sha256_file(path) != digest.read_text().strip():
        log.warning("warm-up cache entry %s does not match its checksum; training anew", path)
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    log.info("reusing the supernet warm-up of %s", path)
    return payload["state"]
