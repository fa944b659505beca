"""The package's import graph has no cycles and no module imports another layer's private
name (scripts/import_graph.py reads the source with ast; lazy imports inside functions count)."""
from __future__ import annotations

from script_helpers import load_script


def test_no_import_cycles_and_no_private_names_across_layers():
    g = load_script("import_graph")
    graph, private = g.imports()
    assert "geot2e.train.loop" in graph and "geot2e.io.raster" in graph  # the whole package was read
    assert g.layer_cycles(graph) == []
    assert private == []


def test_the_cycle_finder_finds_a_cycle():
    g = load_script("import_graph")
    assert g.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert g.layer_cycles({"p": {"p.x"}, "p.x": {"p"}}) == []  # a package and its own submodules
