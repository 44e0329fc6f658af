"""Self-describing model checkpoints: weights, architecture and the dataset they were trained on.

A checkpoint is a ``torch.save`` dict of plain data (loaded with ``weights_only=True``):
``state_dict``, ``arch`` (ArchSpec dict), ``dropout``, ``gate_gamma``, ``dataset`` (the
dataset fingerprint), ``tool_version``, ``kind`` ("sasrec" or "supernet"), ``config``
(constructor settings of non-SASRec kinds) and ``extra`` (free-form, e.g. the dataset name).
A module of another kind provides ``checkpoint_kind`` and ``checkpoint_config()`` and its
class a ``from_checkpoint_config(config)``.
"""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnsrec_edge import __version__
from dnsrec_edge.errors import ArchSpecError, CheckpointMismatch, InputFileError
from dnsrec_edge.fsio import atomic_write_bytes
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.gates import DataAwareGate
from dnsrec_edge.models.sasrec import SASRec

CHECKPOINT_FORMAT = 1
# kind -> "module:Class" building that kind from its checkpoint config
KINDS = {"supernet": "dnsrec_edge.search.supernet:Supernet"}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    dataset_fingerprint: str,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` and what is needed to rebuild it to ``path`` atomically."""
    kind = getattr(model, "checkpoint_kind", "sasrec")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "arch": model.arch.to_dict() if hasattr(model, "arch") else None,
        "dropout": _dropout(model),
        "gate_gamma": _gate_gamma(model),
        "config": model.checkpoint_config() if hasattr(model, "checkpoint_config") else None,
        "dataset": dataset_fingerprint,
        "tool_version": __version__,
        "extra": dict(extra or {}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(
            f"checkpoint '{path}' does not exist; check the path (a run folder holds model.pt)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise InputFileError(f"cannot read checkpoint '{path}' ({err.strerror or err})") from err
    except Exception as err:  # garbage raises assorted errors (Unpickling, Index, Key, ...)
        # torch's own message suggests weights_only=False, which would run the file's code
        what = "is empty" if path.stat().st_size == 0 else "is damaged or of another kind"
        raise InputFileError(
            f"'{path}' is not a dnsrec-edge checkpoint (the file {what}); pass the model.pt "
            "of a run folder"
        ) from err
    if not isinstance(payload, dict) or "state_dict" not in payload or "kind" not in payload:
        raise InputFileError(
            f"'{path}' is not a dnsrec-edge model checkpoint; pass the model.pt of a run folder"
        )
    return payload


def load_checkpoint(
    path: str | Path,
    dataset_fingerprint: str | None = None,
    dataset_name: str = "the given dataset",
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model in ``path``; return ``(model in eval mode, meta)``.

    With ``dataset_fingerprint``, a checkpoint trained on other data (or other preprocessing)
    raises ``CheckpointMismatch``; ``dataset_name`` names that data in the message.
    ``meta`` is the checkpoint dict without ``state_dict``.
    """
    payload = read_checkpoint(path)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    if dataset_fingerprint is not None and payload.get("dataset") != dataset_fingerprint:
        raise CheckpointMismatch(
            f"checkpoint '{path}' was trained on dataset "
            f"'{meta.get('extra', {}).get('dataset_name', '?')}' ({str(payload.get('dataset'))[:12]}…), "
            f"not on '{dataset_name}' ({dataset_fingerprint[:12]}…); use it with the dataset "
            "(and --min-count) it was trained on"
        )
    model = _build(payload, path)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise CheckpointMismatch(
            f"checkpoint '{path}' weights do not fit its architecture ({str(err).splitlines()[0]}); it is damaged"
        ) from err
    return model.eval(), meta


def _build(payload: dict[str, Any], path: str | Path) -> nn.Module:
    kind = payload["kind"]
    if kind == "sasrec":
        try:
            arch = ArchSpec.from_dict(payload["arch"])
        except ArchSpecError as err:
            raise InputFileError(f"checkpoint '{path}' holds a bad architecture: {err}") from err
        return SASRec(
            arch, dropout=payload.get("dropout", 0.2), gate_gamma=payload.get("gate_gamma", 2.0)
        )
    if kind not in KINDS:
        raise InputFileError(
            f"checkpoint '{path}' holds a model of unknown kind '{kind}'; known: sasrec, {', '.join(KINDS)}"
        )
    module, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls).from_checkpoint_config(payload["config"])


def _dropout(model: nn.Module) -> float:
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    return float(drops[0]) if drops else 0.0


def _gate_gamma(model: nn.Module) -> float:
    gammas = [m.gamma for m in model.modules() if isinstance(m, DataAwareGate)]
    return float(gammas[0]) if gammas else 2.0
