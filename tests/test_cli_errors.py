"""Faults a user can cause, through the command line: one sentence, a non-zero exit, and under
--json a JSON error object; -q/-v after the command as before it."""

from __future__ import annotations

import json
import random

import pytest
import torch
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.data.load import load_dataset
from dnsrec_edge.models.archspec import ArchSpec
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.train.checkpoint import save_checkpoint


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    """A small interaction log: 12 users x 6 items each, over 9 items."""
    path = tmp_path_factory.mktemp("log") / "log.csv"
    rows = ["user_id,item_id,timestamp"]
    rows += [f"u{u},{1 + (u + i) % 9},{i}" for u in range(12) for i in range(6)]
    path.write_text("\n".join(rows) + "\n")
    return path


GARBAGE = [random.Random(seed).randbytes(4096) for seed in range(40)]  # assorted torch errors


@pytest.mark.parametrize("content", [b"", GARBAGE], ids=["empty", "random"])
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_file_that_is_no_checkpoint_is_one_sentence(tmp_path, content, command):
    bad = tmp_path / "model.pt"
    what = "is damaged or of another kind" if content else "is empty"
    for data in content if isinstance(content, list) else [content]:
        bad.write_bytes(data)
        args = [command, bad, *(["-o", tmp_path / "m.onnx"] if command == "export" else [])]
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert result.output == (
            f"Error: '{bad}' is not a dnsrec-edge checkpoint (the file {what}); pass the "
            "model.pt of a run folder\n"
        )  # and not torch's advice to load it with weights_only=False


def test_a_model_with_nan_weights_is_refused_not_scored_zero(tiny_log, tmp_path):
    data = load_dataset(tiny_log, min_count=0, quiet=True)
    model = SASRec(ArchSpec.uniform(data.n_items, 8, 8, 1, 1))
    with torch.no_grad():
        for weight in model.parameters():
            weight.fill_(float("nan"))  # a run whose training diverged
    path = save_checkpoint(tmp_path / "model.pt", model, data.fingerprint)
    result = run("evaluate", path, "--dataset", tiny_log, "--min-count", 0, "-q")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: the model returned NaN or infinite scores")
    assert "retrain it" in result.output and "Traceback" not in result.output


def test_quiet_and_verbose_work_after_the_command(tmp_path):
    for flag in ("-q", "--quiet", "-v", "--verbose"):
        assert run("targets", "list", flag).exit_code == 0
        result = run("train", flag, "--dataset", "ml-1n", "--out", tmp_path / "r")
        assert result.exit_code == 1 and "No such option" not in result.output
        assert "unknown dataset 'ml-1n'" in result.output


def test_json_failures_print_a_json_error_object(tmp_path):
    result = run("train", "--json", "--dataset", "ml-1n", "--out", tmp_path / "r")
    assert result.exit_code == 1 and result.stderr == ""
    error = json.loads(result.stdout)
    assert error["type"] == "UnknownDataset" and error["error"].startswith(
        "unknown dataset 'ml-1n'"
    )
    result = run("search", "--json", "-d", "ml-100k", "--budget", "fast", "--out", tmp_path / "s")
    assert result.exit_code == 1 and json.loads(result.stdout)["type"] == "BudgetError"
    result = run("compile", tmp_path / "none.onnx", "-o", tmp_path / "a", "--force")
    assert result.exit_code == 1 and result.stdout == ""  # no --json: the sentence on stderr


def test_calibrate_show_prints_the_cost_model_as_json():
    result = run("calibrate", "--target", "x86_64", "--show", "--json")
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)
    assert model["target"] == "x86_64" and model["kind"] in ("measured", "prior")
