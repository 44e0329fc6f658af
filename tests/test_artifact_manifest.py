"""An artifact's manifest is checked against its folder and its library before anything runs:
file names stay inside the folder, lib.so is named, reference arrays hold numbers, and the
target and architecture it claims are what the library's ELF header shows."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dnsrec_edge.cli import main
from dnsrec_edge.compile.artifact import install_artifact, load_artifact
from dnsrec_edge.errors import InputFileError, OutputNotWritable
from dnsrec_edge.hostinfo import host_arch

pytestmark = pytest.mark.skipif(host_arch() != "x86_64", reason="an x86_64 ELF stands in")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_artifact(folder: Path, **manifest_changes) -> Path:
    """A folder shaped like an x86_64 artifact; its lib.so is /bin/true (an x86_64 ELF)."""
    folder.mkdir(parents=True)
    shutil.copy(shutil.which("true"), folder / "lib.so")
    np.save(folder / "reference_input.npy", np.zeros((1, 4), dtype=np.int64))
    np.save(folder / "reference_output.npy", np.zeros((1, 5), dtype=np.float32))
    names = ("lib.so", "reference_input.npy", "reference_output.npy")
    manifest = {
        "schema": 1,
        "target": "x86_64",
        "arch": "x86_64",
        "device": "cpu",
        "inputs": [{"name": "item_seq", "shape": [1, 4], "dtype": "int64"}],
        "files": {name: _sha(folder / name) for name in names},
        "entry": "main",
    } | manifest_changes
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def edit(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_well_formed_artifact_loads(tmp_path):
    art = load_artifact(fake_artifact(tmp_path / "a"))
    assert art.sha256 == _sha(tmp_path / "a" / "lib.so") and art.runs_here()


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "sub/../../x"])
def test_file_names_outside_the_folder_are_refused_whatever_their_hash(tmp_path, name):
    art = fake_artifact(tmp_path / "a")
    outside = Path("/etc/passwd")
    for digest in (_sha(outside), "0" * 64):  # the right hash and a wrong one
        edit(art, lambda m, d=digest: m["files"].__setitem__(name, d))
        with pytest.raises(InputFileError, match="not a plain name inside the artifact") as err:
            load_artifact(art)
        assert "does not match its sha256" not in str(err.value)


def test_a_link_that_leads_outside_the_folder_is_refused(tmp_path):
    art = fake_artifact(tmp_path / "a")
    (tmp_path / "secret").write_text("outside")
    (art / "notes.txt").symlink_to(tmp_path / "secret")
    edit(art, lambda m: m["files"].__setitem__("notes.txt", _sha(tmp_path / "secret")))
    with pytest.raises(InputFileError, match="resolves outside the artifact folder"):
        load_artifact(art)


def test_a_manifest_without_the_library_is_one_sentence(tmp_path):
    art = fake_artifact(tmp_path / "a")
    edit(art, lambda m: m["files"].pop("lib.so"))
    result = CliRunner().invoke(main, ["bench", str(art), "--local"])
    assert result.exit_code == 1 and "names no lib.so in its files" in result.output
    assert "Traceback" not in result.output


def test_a_reference_array_of_objects_is_refused_not_unpickled(tmp_path):
    art = fake_artifact(tmp_path / "a")
    np.save(art / "reference_output.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    edit(
        art,
        lambda m: m["files"].__setitem__(
            "reference_output.npy", _sha(art / "reference_output.npy")
        ),
    )
    with pytest.raises(InputFileError, match="reference_output.npy' is not a numeric .npy array"):
        load_artifact(art).reference()


@pytest.mark.parametrize(
    ("changes", "claim"),
    [
        ({"target": "arm64"}, "target arm64 is aarch64"),
        ({"target": "arm64", "arch": "aarch64"}, "arch is aarch64"),
    ],
)
def test_a_manifest_that_disagrees_with_its_library_is_refused(tmp_path, changes, claim):
    art = fake_artifact(tmp_path / "a", **changes)
    with pytest.raises(InputFileError, match=claim + ", but lib.so is x86_64 code"):
        load_artifact(art)
    cal = tmp_path / "cal"
    result = CliRunner().invoke(main, ["bench", str(art), "--local", "--calibration-dir", str(cal)])
    assert result.exit_code == 1 and "the manifest was edited" in result.output
    assert not cal.exists()  # nothing recorded, under arm64 or anywhere


def test_install_replaces_an_earlier_artifacts_files_and_nothing_else(tmp_path):
    out = fake_artifact(tmp_path / "out")
    edit(out, lambda m: m["files"].__setitem__("old_extra.bin", "0" * 64))
    (out / "old_extra.bin").write_bytes(b"from the earlier build")
    (out / "model.onnx").write_bytes(b"the user's input")
    (out / "notes.txt").write_text("the user's notes")
    built = fake_artifact(tmp_path / "built")
    install_artifact(built, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "lib.so", "manifest.json", "model.onnx", "notes.txt", "reference_input.npy",
        "reference_output.npy",
    ]  # fmt: skip
    assert not built.exists() and load_artifact(out).runs_here()


def test_install_refuses_to_replace_a_users_file_of_an_artifacts_name(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "lib.so").write_bytes(b"a user's library")  # no manifest: not an artifact's file
    with pytest.raises(OutputNotWritable, match="lib.so' is not part of an earlier artifact"):
        install_artifact(fake_artifact(tmp_path / "built"), out)
    assert (out / "lib.so").read_bytes() == b"a user's library"
