"""The layers of the package point one way (ARCHITECTURE.md): the contract in pyproject.toml, checked on the
import graph of the installed package (imports inside functions count too)."""
import tomllib
from pathlib import Path

import grimp
import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _layers() -> list[grimp.Layer]:
    contract = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"][0]
    assert contract["type"] == "layers"
    return [grimp.Layer(*(m.strip() for m in layer.split("|"))) for layer in contract["layers"]]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("resnets")


def _violations(graph: grimp.ImportGraph) -> list[str]:
    found = graph.find_illegal_dependencies_for_layers(_layers())
    return sorted(f"{dep.importer} -> {dep.imported}" for dep in found)


def test_no_module_imports_from_a_layer_above_it_or_a_sibling(graph):
    assert _violations(graph) == []


def test_every_module_of_the_package_has_a_layer(graph):
    named = {m for layer in _layers() for m in layer.module_tails}
    top = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    data_only = {"__main__", "recipes"}  # the entry point, and the shipped recipes (YAML files, no code)
    assert top - data_only == {n.split(".")[1] for n in named}


def test_an_upward_import_breaks_the_contract(graph):
    graph.add_import(importer="resnets.models.resnet", imported="resnets.engine.train")
    graph.add_import(importer="resnets.data.folder", imported="resnets.models.zoo")  # siblings stay apart
    try:
        assert len(_violations(graph)) == 2
    finally:
        graph.remove_import(importer="resnets.models.resnet", imported="resnets.engine.train")
        graph.remove_import(importer="resnets.data.folder", imported="resnets.models.zoo")
