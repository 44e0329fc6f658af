"""``dnsrec-edge train`` and ``evaluate`` through click's CliRunner on a real ml-100k slice."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main

TINY = ["--max-len", "20", "--hidden", "16", "--blocks", "1", "--threads", "1", "--lr", "0.005"]


def run(*args):
    return CliRunner().invoke(main, ["-q", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def slice_csv(ml100k_raw, tmp_path_factory):
    """Two real slices as CSV files: users 1-150 and users 151-300."""
    folder = tmp_path_factory.mktemp("logs")
    paths = []
    for name, lo, hi in (("a.csv", 1, 150), ("b.csv", 151, 300)):
        rows = ml100k_raw[(ml100k_raw["user"] >= lo) & (ml100k_raw["user"] <= hi)]
        path = folder / name
        rows.rename(columns={"user": "user_id", "item": "item_id", "time": "timestamp"}).to_csv(
            path, index=False
        )
        paths.append(path)
    return paths


@pytest.mark.slow
def test_train_then_evaluate(slice_csv, tmp_path):
    a, b = slice_csv
    out = tmp_path / "run"
    result = run("train", "--dataset", a, "--out", out, "--epochs", 2, *TINY)
    assert result.exit_code == 0, result.output
    for word in ("HR@10", "NDCG@10", "MRR@10", "full", "uni100", "pop100", "valid", "test"):
        assert word in result.output
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"valid", "test"} and set(metrics["test"]) == {
        "full",
        "uni100",
        "pop100",
    }

    again = run("train", "--dataset", a, "--out", out, "--epochs", 1, *TINY)
    assert again.exit_code == 1
    assert (
        again.output
        == f"Error: output '{out}' already exists; choose another path or pass --force\n"
    )

    evaluated = run("evaluate", out, "--part", "test", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    for protocol, values in json.loads(evaluated.output)["test"].items():
        assert values == pytest.approx(metrics["test"][protocol])

    other = run("evaluate", out / "model.pt", "--dataset", b)
    assert other.exit_code == 1
    assert other.output.startswith(
        f"Error: checkpoint '{out / 'model.pt'}' was trained on dataset 'a' ("
    )
    assert other.output.endswith(
        "not on 'b' ("
        + other.output.split("not on 'b' (")[1].split(")")[0]
        + "); use it with the dataset (and --min-count) it was trained on\n"
    )

    resumed = run("train", "--dataset", a, "--out", out, "--resume", *TINY)
    assert resumed.exit_code == 0 and "HR@10" in resumed.output  # finished run: metrics again


def test_evaluate_and_resume_errors(tmp_path):
    missing = tmp_path / "nothing.pt"
    result = run("evaluate", missing)
    assert result.exit_code == 1
    assert result.output == (
        f"Error: checkpoint '{missing}' does not exist; check the path (a run folder holds model.pt)\n"
    )
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    result = run("train", "--dataset", "ml-1n", "--out", fresh, "--resume")
    assert result.exit_code == 1
    assert result.output == (
        "Error: unknown dataset 'ml-1n'; known: ml-100k, ml-1m, ml-latest-small (did you mean ml-1m?)\n"
    )


def test_an_unknown_training_device_is_one_sentence(slice_csv, tmp_path):
    result = run("train", "--dataset", slice_csv[0], "--out", tmp_path / "r", "--device", "gpu0")
    assert result.exit_code == 1
    assert result.output == (
        "Error: invalid training settings: device 'gpu0' is not cpu, cuda, cuda:N or mps\n"
    )
    assert not (tmp_path / "r").exists()  # refused before anything was written
