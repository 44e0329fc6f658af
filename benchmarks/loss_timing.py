"""Time of one distillation loss step (forward + backward) at a real dataset's shapes: the
materialised full-catalogue KL against ``losses.linear_distillation``, side by side.

The fine-tune's loss (CE mixed with the KL to the baseline's softened scores) and the supernet
warm-up's in-place distillation (KL only, temperature 1) are both full-catalogue softmaxes over
every real position of a batch; at ml-1m's shapes (batch 128, length 200, 3,416 items) that is
about 25,000 rows of 3,416 logits per model.

    python benchmarks/loss_timing.py --items 3416 --rows 25000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import interleaved  # beside this script

from dnsrec_edge.fsio import atomic_write_json
from dnsrec_edge.train.losses import linear_distillation

RESULTS = Path(__file__).resolve().parent / "results"


def materialised(h, w, t_h, t_w, target, a, b, temp):
    """The loss as ``F.cross_entropy`` and ``F.kl_div`` over the full (N, n_items) logits."""
    logits = h @ w.t()
    with torch.no_grad():
        soft = F.log_softmax(t_h @ t_w.t() / temp, -1)
    kl = F.kl_div(F.log_softmax(logits / temp, -1), soft, log_target=True, reduction="batchmean")
    return a * F.cross_entropy(logits, target) + b * kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=3416)
    parser.add_argument("--rows", type=int, default=25000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "loss_timing.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h = torch.randn(args.rows, args.hidden, requires_grad=True)
    w = (0.1 * torch.randn(args.items, args.hidden)).requires_grad_()
    t_h, t_w = torch.randn(args.rows, args.hidden), 0.1 * torch.randn(args.items, args.hidden)
    target = torch.randint(0, args.items, (args.rows,))
    cases = {"finetune (CE 0.5 + KL at T=2)": (0.5, 0.5 * 4, 2.0), "warm-up (KL, T=1)": (0, 1, 1)}
    fns = {}
    for name, (a, b, temp) in cases.items():
        fns[f"{name}, materialised"] = lambda a=a, b=b, temp=temp: materialised(
            h, w, t_h, t_w, target, a, b, temp
        ).backward()
        fns[f"{name}, chunked"] = lambda a=a, b=b, temp=temp: linear_distillation(
            h, w, t_h, t_w, target, a, b, temp
        ).backward()
    times = interleaved(fns, rounds=args.rounds, per_round=1, warmup=1)
    for name, t in times.items():
        print(f"{name}: {t['median']:.0f} ms")
    result = {
        "command": "python benchmarks/loss_timing.py "
        + " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "shapes": {"rows": args.rows, "items": args.items, "hidden": args.hidden},
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "ms": times,
        "speedup": {
            name: times[f"{name}, materialised"]["median"] / times[f"{name}, chunked"]["median"]
            for name in cases
        },
    }
    print(json.dumps(result["speedup"], indent=1))
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
