"""ArchSpec validation and JSON round trip."""

import json

import pytest

from dnsrec_edge.errors import ArchSpecError
from dnsrec_edge.models.archspec import ArchSpec, BlockSpec


def test_round_trip_keeps_every_field():
    arch = ArchSpec(
        3706, 200, 64, (BlockSpec(4, 16, 256, 16), BlockSpec(1, 16, 64, 0, "linear", "query"))
    )
    back = ArchSpec.from_json(arch.to_json())
    assert back == arch
    d = json.loads(arch.to_json())
    assert d["depth"] == 2 and d["blocks"][1]["attention"] == "linear"
    assert [b["norm"] for b in d["blocks"]] == ["pre", "query"]


def test_a_spec_written_before_block_norms_reads_as_pre_norm():
    d = ArchSpec.uniform(10, 5, 8, depth=2).to_dict()
    for b in d["blocks"]:
        del b["norm"]
    assert all(b.norm == "pre" for b in ArchSpec.from_dict(d).blocks)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("blocks"), "lacks the field(s) blocks"),
        (lambda d: d.update(depth=3), "says depth 3 but lists 2 block(s)"),
        (lambda d: d["blocks"][0].update(heads=0), "block 0 needs heads"),
        (lambda d: d["blocks"][1].update(attention="sparse"), "attention 'sparse' is not one of"),
        (
            lambda d: d["blocks"][1].update(norm="post"),
            "block 1 norm 'post' is not one of pre, query",
        ),
        (lambda d: d["blocks"][0].update(colour="red"), "malformed ArchSpec"),
        (lambda d: d.update(version=9), "version 9 is not 1"),
    ],
)
def test_bad_archspec_is_refused_with_reason(mutate, message):
    d = ArchSpec.uniform(10, 5, 8, depth=2, heads=2).to_dict()
    mutate(d)
    with pytest.raises(ArchSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ArchSpec.from_dict(d)


def test_corrupt_json_file(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text('{"n_items": 3,')
    with pytest.raises(ArchSpecError, match="not valid JSON"):
        ArchSpec.load(path)
    with pytest.raises(ArchSpecError, match="cannot read ArchSpec"):
        ArchSpec.load(tmp_path / "missing.json")
