"""Trainer and checkpoints on a real ml-100k slice: learning, early stopping, resume, refusal."""

from __future__ import annotations

import pytest
import torch

from dnsrec_edge.errors import CheckpointMismatch, InputFileError, OutputExists, TrainConfigError
from dnsrec_edge.evaluate import evaluate
from dnsrec_edge.models.sasrec import SASRec
from dnsrec_edge.train.checkpoint import load_checkpoint, save_checkpoint
from dnsrec_edge.train.trainer import TrainConfig, baseline_arch, train_baseline, train_model

TINY = {"max_len": 30, "hidden": 16, "blocks": 1, "batch_size": 32, "threads": 1, "lr": 5e-3}


def _model(dataset, config):
    torch.manual_seed(config.seed)
    return SASRec(baseline_arch(dataset, config), dropout=config.dropout)


def _interrupt_in_epoch_2(dataset, config, out):
    """Train into ``out`` until the first step of epoch 2, then stop as Ctrl-C would."""

    def interrupt(info):
        if info.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_model(_model(dataset, config), dataset, config, out, quiet=True, on_batch=interrupt)


@pytest.mark.slow
def test_training_learns_and_restores_the_best(ml100k_small, tmp_path):
    config = TrainConfig(epochs=4, **TINY)
    model = _model(ml100k_small, config)
    before = evaluate(model.predict, ml100k_small, "valid", 30, protocols=("full",))["full"]
    result = train_model(model, ml100k_small, config, out_dir=tmp_path, quiet=True)
    assert result.epochs == 4 and result.stopped == "epochs" and len(result.history) == 4
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_valid["ndcg@10"] > before["ndcg@10"]
    best = max(result.history, key=lambda r: r["valid_ndcg@10"])
    assert result.best_epoch == best["epoch"]
    again = evaluate(result.model.predict, ml100k_small, "valid", 30, protocols=("full",))["full"]
    assert again == pytest.approx(result.best_valid)  # the best weights were restored
    loaded, meta = load_checkpoint(
        tmp_path / "model.pt", dataset_fingerprint=ml100k_small.fingerprint
    )
    assert meta["kind"] == "sasrec" and meta["extra"]["dataset_name"] == "ml-100k-small"
    seq = torch.tensor([[0] * 25 + [1, 2, 3, 4, 5]])
    assert torch.allclose(loaded.predict(seq), result.model.predict(seq), atol=1e-6)


def test_early_stopping_on_patience(ml100k_small):
    config = TrainConfig(epochs=50, patience=1, **{**TINY, "lr": 1e-9, "max_len": 10})
    result = train_model(_model(ml100k_small, config), ml100k_small, config, quiet=True)
    assert result.stopped == "patience" and result.epochs < 50


@pytest.mark.slow
def test_resume_after_interrupt_matches_uninterrupted(ml100k_small, tmp_path):
    config = TrainConfig(epochs=2, **{**TINY, "loss": "sampled", "negatives": 32, "ema": 0.99})
    straight = train_model(
        _model(ml100k_small, config), ml100k_small, config, tmp_path / "a", quiet=True
    )

    _interrupt_in_epoch_2(ml100k_small, config, tmp_path / "b")
    resumed = train_model(
        _model(ml100k_small, config), ml100k_small, config, tmp_path / "b", quiet=True, resume=True
    )
    assert resumed.epochs == 2 and [r["epoch"] for r in resumed.history] == [1, 2]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_run_folder_refusal_and_force(ml100k_small, tmp_path):
    config = TrainConfig(epochs=1, **{**TINY, "max_len": 10})
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExists):
        train_baseline(ml100k_small, out, config, quiet=True, protocols=("full",))
    result = train_baseline(ml100k_small, out, config, quiet=True, force=True, protocols=("full",))
    assert (out / "notes.txt").read_text() == "mine"  # --force replaces run files only
    assert set(result.metrics) == {"valid", "test"} and (out / "metrics.json").exists()
    with pytest.raises(InputFileError, match="no training state"):
        train_model(
            _model(ml100k_small, config), ml100k_small, config, tmp_path / "empty", resume=True
        )


def test_checkpoint_errors(ml100k_small, ml100k, tmp_path):
    config = TrainConfig(epochs=1, **TINY)
    model = _model(ml100k_small, config)
    path = save_checkpoint(
        tmp_path / "m.pt", model, ml100k_small.fingerprint, {"dataset_name": "ml-100k-small"}
    )
    with pytest.raises(CheckpointMismatch) as err:
        load_checkpoint(path, dataset_fingerprint=ml100k.fingerprint, dataset_name="ml-100k")
    assert str(err.value) == (
        f"checkpoint '{path}' was trained on dataset 'ml-100k-small' ({ml100k_small.fingerprint[:12]}…), "
        f"not on 'ml-100k' ({ml100k.fingerprint[:12]}…); use it with the dataset (and --min-count) it was trained on"
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(
        InputFileError, match=r"is not a dnsrec-edge checkpoint \(the file is damaged"
    ):
        load_checkpoint(junk)
    with pytest.raises(InputFileError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")


def test_valid_share_holds_out_a_seeded_subset(ml100k_small):
    from dnsrec_edge.train.trainer import final_metrics, validation_holdout

    assert validation_holdout(ml100k_small, TrainConfig(**TINY)) is None
    config = TrainConfig(epochs=1, valid_share=0.25, **TINY)
    holdout = validation_holdout(ml100k_small, config)
    assert holdout.sum() == round(0.25 * ml100k_small.n_users)
    assert (holdout == validation_holdout(ml100k_small, config)).all()  # same users every call
    result = train_model(_model(ml100k_small, config), ml100k_small, config, quiet=True)
    subset = ml100k_small.subset(holdout.nonzero()[0])
    valid = evaluate(result.model.predict, subset, "valid", config.max_len, protocols=("full",))
    both = final_metrics(result.model, ml100k_small, config, ("full",))
    assert both["valid"]["full"] == pytest.approx(valid["full"])
    assert result.best_valid == pytest.approx(valid["full"])


def test_bf16_training_learns_and_keeps_float32_weights(ml100k_small):
    config = TrainConfig(epochs=3, precision="bf16", **TINY)
    model = _model(ml100k_small, config)
    before = evaluate(model.predict, ml100k_small, "valid", 30, protocols=("full",))["full"]
    result = train_model(model, ml100k_small, config, quiet=True)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert result.best_valid["ndcg@10"] > before["ndcg@10"]
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


def test_unknown_precision_and_a_spent_budget_are_refused():
    with pytest.raises(TrainConfigError, match="precision .fp16. is not one of fp32, bf16"):
        TrainConfig(precision="fp16")
    with pytest.raises(TrainConfigError, match=r"budget_seconds must be > 0 \(got 0\)"):
        TrainConfig(budget_seconds=0)


def test_resume_from_a_damaged_training_state_is_one_safe_sentence(ml100k_small, tmp_path):
    config = TrainConfig(epochs=1, **{**TINY, "max_len": 10})
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"\x80\x02garbage that is no torch file")
    with pytest.raises(InputFileError) as err:
        train_model(
            _model(ml100k_small, config), ml100k_small, config, out, quiet=True, resume=True
        )
    message = str(err.value)
    assert message == (
        f"training state '{out / 'last.pt'}' is damaged or not a dnsrec-edge training state; "
        "start again with --force"
    )
    assert "weights_only" not in message


def test_schedule_fits_its_cosine_decay_into_a_time_budget():
    from dnsrec_edge.train.trainer import Schedule

    schedule = Schedule(TrainConfig(epochs=80, warmup_epochs=2), steps_per_epoch=10)
    assert schedule(100) > 0.9  # 80 epochs: barely decayed at epoch 10
    assert schedule.fit_budget(done=2, spent=100.0, budget=1000.0) == 20  # 50 s an epoch
    assert schedule(199) < 1e-3 and schedule(200) == 0.0  # the decay now ends at epoch 20
    assert schedule.fit_budget(done=5, spent=500.0, budget=100.0) == 5  # never below done
    assert schedule.fit_budget(done=1, spent=1.0, budget=1e6) == 80  # never past epochs


def test_a_spent_time_budget_ends_training_after_the_epoch(ml100k_small):
    config = TrainConfig(epochs=50, budget_seconds=1e-3, **{**TINY, "max_len": 10})
    result = train_model(_model(ml100k_small, config), ml100k_small, config, quiet=True)
    assert result.stopped == "budget" and result.epochs == 1 and result.budget_spent > 1e-3
    assert result.history[0]["horizon"] == 1


def test_a_training_state_of_an_older_version_resumes(ml100k_small, tmp_path):
    config = TrainConfig(epochs=2, **{**TINY, "max_len": 10})

    _interrupt_in_epoch_2(ml100k_small, config, tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["budget_spent"]  # a key that states before the time budget lack
    torch.save(state, tmp_path / "last.pt")
    resumed = train_model(
        _model(ml100k_small, config), ml100k_small, config, tmp_path, quiet=True, resume=True
    )
    assert resumed.epochs == 2 and [r["epoch"] for r in resumed.history] == [1, 2]
