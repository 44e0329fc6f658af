"""Imports point down the layers of ``dnsrec_edge/layers.py``, and the check itself works."""

import ast

from dnsrec_edge import layers


def test_every_import_points_down():
    problems = layers.check()
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_each_unit_is_in_one_layer():
    names = [name for layer in layers.LAYERS for name in layer]
    assert len(names) == len(set(names))


def test_the_check_sees_an_upward_import(tmp_path):
    pkg = tmp_path / "dnsrec_edge"
    (pkg / "models").mkdir(parents=True)
    (pkg / "search").mkdir()
    (pkg / "__init__.py").write_text("__version__ = '0'\n")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "search" / "__init__.py").write_text("")
    (pkg / "models" / "sasrec.py").write_text(
        "from dnsrec_edge import __version__\ndef f():\n    from dnsrec_edge.search import loop\n"
    )
    (pkg / "search" / "loop.py").write_text("import dnsrec_edge.models.sasrec\n")
    problems = layers.check(pkg)
    assert problems == ["dnsrec_edge/models/sasrec.py:3: 'models' imports 'search', a higher layer"]


def test_from_package_import_names_the_module(tmp_path):
    (tmp_path / "paths.py").write_text("")
    tree = ast.parse("from dnsrec_edge import paths, __version__\nimport dnsrec_edge.board.rpc\n")
    assert layers.imported_units(tree, tmp_path) == [(1, "paths"), (1, ""), (2, "board")]
