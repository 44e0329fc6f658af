"""Fitting a target's cost model from its measurement records, and showing how well it fits.

A calibration run (``dnsrec_edge.bench.calibrate``) measures sampled architectures on a
board and appends each measurement to the store; :func:`fit_records` then fits the target's
:class:`CalibratedModel` on every record and saves it with its held-out error, beside the
roofline prior's and the best FLOPs-only model's, and a predicted-vs-measured plot.

Example::

    model, path, plot = fit_records("x86_64")  # from the records alone
    write_prior("rpi4")                      # the roofline/power prior as model.json
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnsrec_edge.cost.calibrated import CalibratedModel, TargetFacts, load_cost_model
from dnsrec_edge.cost.records import MODEL_FILE, load_records, store_dir
from dnsrec_edge.errors import ArchSpecError, CalibrationError
from dnsrec_edge.models.archspec import ArchSpec

PLOT_FILE = "heldout.png"


@dataclass
class CalibrationResult:
    """What a calibration run or refit produced."""

    target: str
    model: CalibratedModel
    model_path: Path
    plot_path: Path | None
    measured: int  # architectures measured in this run
    skipped: int  # already measured on this board (resumed)
    failed: list[str] = field(default_factory=list)  # one line per architecture that failed

    def summary(self) -> str:
        lines = [
            f"target {self.target}: measured {self.measured} new architecture(s)"
            + (f", {self.skipped} already measured" if self.skipped else "")
            + (f", {len(self.failed)} failed" if self.failed else "")
        ]
        lines += [f"  failed: {line}" for line in self.failed]
        records = len(self.model.meta.get("records", []))
        lines.append(f"fitted on {records} record(s); " + self.model.describe())
        lines.append(f"model: {self.model_path}")
        if self.plot_path:
            lines.append(f"plot:  {self.plot_path}")
        return "\n".join(lines)


def fit_records(
    target: Any, calibration_dir: str | Path | None = None, statistic: str = "min"
) -> tuple[CalibratedModel, Path, Path | None]:
    """Fit the target's model on every record of its store and save it with the plot.

    ``statistic`` ("min" or "median") is the latency figure of each measurement it fits.
    Returns the model, its ``model.json`` and the plot (``None`` without held-out points).
    """
    facts = TargetFacts.of(target)
    check_model_file(facts, calibration_dir)
    records = load_records(facts.name, calibration_dir)
    model = CalibratedModel.prior(facts).fit(records, statistic=statistic)
    path = model.save(calibration_dir)
    plot = plot_heldout(model, path.parent / PLOT_FILE)
    model.meta["source"] = str(path)
    return model, path, plot


def calibrated_threads(target: Any, calibration_dir: str | Path | None = None) -> int | None:
    """The TVM thread count the target's measured model was fitted on (``None``: a prior)."""
    model = load_cost_model(target, calibration_dir)
    if model.kind == "measured" and model.meta.get("threads"):
        return int(model.meta["threads"])
    return None


def record_points(
    model: CalibratedModel, target: str, calibration_dir: str | Path | None = None, limit: int = 300
) -> list[dict[str, Any]]:
    """Predicted vs measured latency (the model's statistic) of the target's last ``limit``
    batch-1 records: ``[{"kind": "record", "predicted_ms", "measured_ms"}]``."""
    points = []
    for rec in load_records(target, calibration_dir)[-limit:]:
        measured = (rec.get("latency_ms") or {}).get(model.statistic)
        if not rec.get("arch") or rec.get("batch") != 1 or not measured:
            continue
        try:
            arch = ArchSpec.from_dict(rec["arch"])
        except ArchSpecError:
            continue
        points.append(
            {
                "kind": "record",
                "predicted_ms": model.predict(arch).latency_ms,
                "measured_ms": measured,
            }
        )
    return points


def check_model_file(facts: TargetFacts, calibration_dir: str | Path | None) -> None:
    """Refuse to replace a store's model file that is not a cost model of this target.

    A model of this target (of any age or feature set) is what a refit replaces.
    """
    path = store_dir(calibration_dir) / facts.name / MODEL_FILE
    if not path.is_file():
        return
    try:
        made_for = json.loads(path.read_text(encoding="utf-8")).get("target")
    except (OSError, ValueError, AttributeError) as err:
        raise CalibrationError(
            f"'{path}' is not a readable cost model ({err}); it is not replaced: "
            "move it away, then run calibrate again"
        ) from err
    if made_for != facts.name:
        raise CalibrationError(
            f"'{path}' is a cost model for target '{made_for}', not '{facts.name}'; it is not "
            "replaced: move it away, then run calibrate again"
        )


def write_prior(target: Any, calibration_dir: str | Path | None = None) -> Path:
    """Write the target's roofline/power prior as its ``model.json`` (kind "prior")."""
    return CalibratedModel.prior(TargetFacts.of(target)).save(calibration_dir)


def plot_heldout(model: CalibratedModel, path: Path) -> Path | None:
    """Predicted (held-out) vs measured latency, with the prior's predictions, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from dnsrec_edge.fsio import atomic_write_bytes

    preds = model.meta.get("predictions") or []
    if not preds:
        return None
    meas = np.array([p["measured_ms"] for p in preds])
    held = np.array([p["heldout_ms"] for p in preds])
    prior = np.array([p["prior_ms"] for p in preds])
    h, q = model.meta["heldout"], model.meta["prior_heldout"]
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    lo = min(meas.min(), held.min(), prior.min()) * 0.8
    hi = max(meas.max(), held.max(), prior.max()) * 1.25
    line = np.array([lo, hi])
    ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="±10 %")
    ax.plot(line, line, color="0.5", lw=0.8)
    ax.scatter(
        meas,
        held,
        s=16,
        label=f"calibrated, held out (MAPE {h['mape']:.1f} %, "
        f"{100 * h['within10']:.0f} % within ±10 %)",
    )
    ax.scatter(
        meas,
        prior,
        s=12,
        marker="x",
        color="tab:red",
        label=f"roofline prior (MAPE {q['mape']:.0f} %)",
    )
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(lo, hi),
        ylim=(lo, hi),
        xlabel="measured latency (ms)",
        ylabel="predicted latency (ms)",
        title=f"{model.target}: {h['n']} architectures, batch {model.batch}",
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        fig.savefig(Path(tmp) / "plot.png")
        plt.close(fig)
        return atomic_write_bytes(path, (Path(tmp) / "plot.png").read_bytes())
