"""The front a search scored, on the test users with the supernet's weights (not fine-tuned).

The points are those of ``front.json`` (:mod:`search.front`: the most probable in-budget
architectures and each epoch's pick, with their validation NDCG@10, predicted cost and
measured latency share); a run folder from before the front existed gives each epoch's pick
and argmax of ``search_log.jsonl`` instead. Each is evaluated on the test users with the
supernet's weights (``supernet.pt``), in hard mode. The pipeline's report plots them beside
the baseline and the fine-tuned subnet.

Example::

    rows = evaluate_candidates("runs/s1", dataset, max_len=200, limit=12)
    rows[0]["label"], rows[0]["ndcg@10"]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dnsrec_edge.cost.analysis import size
from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.evaluate import evaluate
from dnsrec_edge.fsio import read_jsonl
from dnsrec_edge.search.space import Choice
from dnsrec_edge.train.checkpoint import load_checkpoint


def evaluate_candidates(
    run_dir: str | Path, dataset: Dataset, max_len: int, limit: int
) -> list[dict[str, Any]]:
    """Test NDCG@10 and HR@10 of the first ``limit`` points of the run's front (or, for an
    older run, of the distinct architectures it visited), with the supernet's weights."""
    run_dir = Path(run_dir)
    supernet, _ = load_checkpoint(run_dir / "supernet.pt", dataset.fingerprint)
    supernet.eval()
    seen: dict[tuple, dict[str, Any]] = {}
    front = run_dir / "front.json"
    if front.is_file():
        for point in json.loads(front.read_text(encoding="utf-8"))[:limit]:
            choice = Choice(point["choice"]["depth"], tuple(map(tuple, point["choice"]["blocks"])))
            seen[(choice.depth, choice.blocks)] = {
                "label": ", ".join(point["sources"]),
                "choice": choice,
                "valid_ndcg@10": point["valid"]["ndcg@10"],
                "measured_share": point.get("measured_share"),
            }
    for _, record, _raw in [] if seen else read_jsonl(run_dir / "search_log.jsonl"):
        if record is None:
            continue
        for key in ("selected", "argmax"):
            choice = Choice(record[key]["depth"], tuple(map(tuple, record[key]["blocks"])))
            ident = (choice.depth, choice.blocks)
            if ident not in seen and len(seen) < limit:
                seen[ident] = {"label": f"epoch {record['epoch']} {key}", "choice": choice}
    out = []
    for item in seen.values():
        choice = item.pop("choice")
        with torch.no_grad(), supernet.selected(choice):
            test = evaluate(supernet.predict, dataset, "test", max_len, protocols=("full",))
        arch = supernet.space.arch(choice)
        out.append(
            {
                **item,
                "depth": choice.depth,
                "blocks": [list(b) for b in choice.blocks],
                "arch": arch.to_dict(),
                "ndcg@10": test["full"]["ndcg@10"],
                "hr@10": test["full"]["hr@10"],
                **size(arch),
            }
        )
    return out
