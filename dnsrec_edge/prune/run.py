"""``prune RUN_DIR``: materialise a search run's chosen subnet into a small SASRec checkpoint.

A search run folder holds the supernet checkpoint ``supernet.pt`` and the chosen
``arch.json``. The output folder (default ``RUN_DIR/pruned``) gets ``model.pt`` (a plain
SASRec checkpoint whose ``extra.prune_plan`` holds the plan), ``plan.json`` and ``arch.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dnsrec_edge.errors import CheckpointMismatch, InputFileError
from dnsrec_edge.fsio import atomic_write_json, atomic_write_text, ensure_new
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.prune.materialize import materialize, require_supernet

if TYPE_CHECKING:
    from dnsrec_edge.data.dataset import Dataset

log = logging.getLogger(__name__)

SUPERNET_FILE = "supernet.pt"
ARCH_FILE = "arch.json"


def prune_run(
    run_dir: str | Path,
    *,
    arch: str | Path | ArchSpec | None = None,
    out_dir: str | Path | None = None,
    dataset: Dataset | str | None = None,
    force: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Materialise the subnet of a search run (or of a supernet checkpoint file) into ``out_dir``.

    ``arch`` overrides the run's ``arch.json``; ``dataset`` (the one searched on) supplies
    real histories for the equivalence check. Returns ``(model.pt path, plan)``.
    """
    from dnsrec_edge.train.checkpoint import read_checkpoint, save_checkpoint

    run = Path(run_dir)
    checkpoint = run if run.is_file() else run / SUPERNET_FILE
    if not checkpoint.is_file():
        raise InputFileError(
            f"'{run}' holds no {SUPERNET_FILE}; pass a search run folder or a supernet checkpoint"
        )
    folder = checkpoint.parent
    if arch is None:
        arch = folder / ARCH_FILE
        if not arch.is_file():
            raise InputFileError(
                f"'{folder}' holds no {ARCH_FILE}; pass the chosen ArchSpec with --arch"
            )
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.load(arch)
    out = Path(out_dir) if out_dir is not None else folder / "pruned"
    target = ensure_new(out / "model.pt", force)

    meta = read_checkpoint(checkpoint)
    require_supernet(checkpoint, meta)
    inputs = None
    if isinstance(dataset, (str, Path)):
        from dnsrec_edge.data.load import load_dataset

        dataset = load_dataset(dataset, quiet=True)
    if dataset is not None:
        from dnsrec_edge.export.validate import dataset_inputs

        if meta.get("dataset") and meta["dataset"] != dataset.fingerprint:
            raise CheckpointMismatch(
                f"checkpoint '{checkpoint}' was searched on other data than dataset "
                f"'{dataset.name}'; check equivalence on the dataset it was searched on"
            )
        inputs = dataset_inputs(dataset, spec.max_len)
    model, plan = materialize(checkpoint, spec, inputs=inputs)
    if dataset is not None:
        plan["equivalence"]["inputs"] = f"{dataset.name} test"
    extra = {k: v for k, v in (meta.get("extra") or {}).items() if k == "dataset_name"}
    save_checkpoint(target, model, meta.get("dataset") or "", {**extra, "prune_plan": plan})
    atomic_write_json(out / "plan.json", plan)
    atomic_write_text(out / ARCH_FILE, model.arch.to_json())
    log.debug("wrote %s (%d -> %d parameters)", target, plan["params_before"], plan["params_after"])
    return target, plan
