"""The layout's one-way street, checked from the source itself (issue 13): an AST scan of every
module of the repository's top-level packages, lazy imports included, finds no two packages that
import each other; the serving package reaches neither ingestion, offline ML nor benchmarks; and
import-linter's contracts are not silenced anywhere."""

from __future__ import annotations

import ast
import itertools
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Every top-level package of the repository but the tests themselves.
PACKAGES = sorted(
    p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"
)


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the statement is (functions included)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importer package, imported package) -> the importing modules."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _imported(path):
                top = name.split(".")[0]
                if top in PACKAGES and top != package:
                    edges[(package, top)].append(f"{_module(path)} -> {name}")
    return edges


def test_the_scan_sees_every_package() -> None:
    assert {"clipsearch", "service", "indexer", "models", "loadtests"} <= set(PACKAGES)
    assert ("clipsearch", "service") in _edges()  # the scan finds imports at all


def test_no_two_top_level_packages_import_each_other() -> None:
    edges = _edges()
    cycles = {
        (a, b): edges[(a, b)] + edges[(b, a)]
        for a, b in itertools.combinations(PACKAGES, 2)
        if (a, b) in edges and (b, a) in edges
    }
    assert not cycles


def test_nothing_imports_the_composition_root() -> None:
    importers = {a: where for (a, b), where in _edges().items() if b == "clipsearch"}
    assert not importers


def test_serving_imports_neither_ingestion_nor_offline_code_nor_benchmarks() -> None:
    edges = _edges()
    for other in ("indexer", "models", "loadtests", "clipsearch"):
        assert ("service", other) not in edges, edges[("service", other)]
    assert not list((ROOT / "service").rglob("bench*")), "benchmarks live in loadtests/"


def test_import_contracts_are_not_silenced() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    linter = config["tool"]["importlinter"]
    assert set(linter["root_packages"]) == set(PACKAGES)
    for contract in linter["contracts"]:
        assert "ignore_imports" not in contract, contract["name"]
    layered = {c["containers"][0] for c in linter["contracts"] if c.get("containers")}
    assert {"service", "indexer"} <= layered
    assert all(c["exhaustive"] for c in linter["contracts"] if c.get("containers"))


if __name__ == "__main__":  # `python -m tests.test_layout`: the import edges between packages
    for (importer, imported), where in sorted(_edges().items()):
        print(f"{importer} -> {imported}: {len(where)} imports")
