"""Layering: which packages may import which, every module importable on its own, and the
installed package list matching the source tree (docs/design.md, Layering)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

STUDIES = ("topoprune_studies", "studies")
# what the foundation packages (topology, io, stats, data), attachment and plot never import
UPPER = ("topoprune.prune", "topoprune.train", "topoprune.models", "topoprune.cli", *STUDIES)

# The rules. A module is bound by the row of every package it lies in (a row's key covers the
# package and everything below it): it never imports a module in, or below, one of the row's
# forbidden packages, unless the (importer, imported) pair is in ALLOWED. Imports are read from
# the source, function-level and TYPE_CHECKING ones included.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "topoprune.topology": UPPER,
    "topoprune.io": UPPER,
    "topoprune.stats": UPPER,
    "topoprune.data": UPPER,
    "topoprune.attachment": UPPER,  # attachment and plot sit on topology and stats
    "topoprune.plot": UPPER,
    "topoprune.compress": UPPER,  # storage formats sit on io, beside it
    "topoprune.runner": UPPER,  # runs any task by name: it knows no training or study
    "topoprune.prune": ("topoprune.train", "topoprune.cli", *STUDIES),
    "topoprune": STUDIES,
    # the studies import one another relatively: `studies` is a folder, not an installed name
    "topoprune_studies": ("studies",),
}
ALLOWED: set[tuple[str, str]] = {("topoprune.cli", "topoprune_studies")}

REPO = Path(__file__).resolve().parents[1]
# installed package name -> its folder in the repository
PACKAGE_DIRS = {"topoprune": REPO / "topoprune", "topoprune_studies": REPO / "studies"}


def _source_modules() -> dict[str, Path]:
    """Every module of the installed packages, by dotted name (a package by its own name)."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = _source_modules()


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports(module: str, path: Path) -> list[tuple[int, str, str]]:
    """(line, imported module, source text) for every import in a module's source.

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule). Relative imports
    are resolved; ``importlib.import_module("x")`` with a literal name counts as an import.
    """
    source = path.read_text()
    tree = ast.parse(source, filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            names = [stem, *(f"{stem}.{alias.name}" for alias in node.names if alias.name != "*")]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        if not names:
            continue
        text = ast.get_source_segment(source, node) or ""
        found.extend((node.lineno, name, " ".join(text.split())) for name in names)
    return found


def _violations() -> list[str]:
    out = []
    for module, path in MODULES.items():
        rules = [(k, v) for k, v in FORBIDDEN.items() if _within(module, k)]
        for line, imported, text in _imports(module, path):
            for owner, forbidden in rules:
                hit = next((f for f in forbidden if _within(imported, f)), None)
                if hit is None or any(
                    _within(module, a) and _within(imported, b) for a, b in ALLOWED
                ):
                    continue
                where = path.relative_to(REPO)
                out.append(f"{where}:{line}: {module} imports {hit} ({owner} must not): {text}")
                break
    return sorted(set(out))


def test_layering():
    violations = _violations()
    assert not violations, "layering broken:\n" + "\n".join(violations)


def test_rules_are_checked(tmp_path):
    """The checker sees relative, function-level and literal importlib imports, and the CLI's."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import importlib\n"
        "def f():\n"
        "    from ..prune import masks\n"
        "    from . import fit\n"
        "    importlib.import_module('topoprune_studies.scale_free')\n"
    )
    names = [name for _, name, _ in _imports("topoprune.stats.probe", path)]
    assert names == [
        "importlib",
        "topoprune.prune",
        "topoprune.prune.masks",
        "topoprune.stats",
        "topoprune.stats.fit",
        "topoprune_studies.scale_free",
    ]
    imports = _imports("topoprune.cli", MODULES["topoprune.cli"])
    assert any(_within(name, "topoprune_studies") for _, name, _ in imports)
    assert set(FORBIDDEN) <= {m for m in MODULES if m.count(".") <= 1}, "a rule names no package"


# Fresh imports: each module is imported with none of topoprune's modules loaded (they are
# dropped from sys.modules before every import), so an import cycle that works only when another
# module happens to be imported first is caught. The modules are shared among a few fresh
# interpreters (one per CPU) rather than one each: third-party imports (torch) take seconds.
_IMPORT_EACH = """
import importlib, json, sys, traceback
from pathlib import Path
repo, names = Path(sys.argv[1]), sys.argv[2:]
failures = {}
for name in names:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ("topoprune", "topoprune_studies")]:
        del sys.modules[loaded]
    try:
        module = importlib.import_module(name)
        if repo not in Path(module.__file__).resolve().parents:
            failures[name] = f"imported from {module.__file__}, not from {repo} (pip install -e .)"
    except BaseException:
        failures[name] = traceback.format_exc(limit=-3)
print("\\n" + json.dumps(failures))
"""


def _group(module: str) -> str:
    """The subpackage a module lies in, or its top-level package for a top-level module."""
    top = module.split(".")[0]
    in_subpackage = len(MODULES[module].relative_to(PACKAGE_DIRS[top]).parts) > 1
    return ".".join(module.split(".")[:2]) if in_subpackage else top


GROUPS = sorted({_group(m) for m in MODULES})


@pytest.fixture(scope="module")
def import_failures(tmp_path_factory) -> dict[str, str]:
    """Failed imports: module -> traceback (or what went wrong with its interpreter)."""
    cwd = tmp_path_factory.mktemp("fresh")  # outside the repository: the installed packages

    def run(names: list[str]) -> dict[str, str]:
        command = [sys.executable, "-c", _IMPORT_EACH, str(REPO), *names]
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
        if done.returncode:
            return dict.fromkeys(names, f"the interpreter failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.splitlines()[-1])  # the last line: the module may print

    n = min(os.cpu_count() or 1, 4)
    batches = [list(MODULES)[i::n] for i in range(n)]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return {k: v for failures in pool.map(run, batches) for k, v in failures.items()}


@pytest.mark.parametrize("group", GROUPS)
def test_fresh_import(group, import_failures):
    failures = {m: e for m, e in import_failures.items() if _group(m) == group}
    assert not failures, "\n".join(f"import {name} failed:\n{e}" for name, e in failures.items())


def test_installed_packages_match_the_source_tree():
    """pyproject.toml lists the packages explicitly (the studies folder is renamed on install)."""
    tomllib = pytest.importorskip("tomllib")
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {name: REPO / path for name, path in setup.get("package-dir", {}).items()}
    packages = {m for m, path in MODULES.items() if path.name == "__init__.py"}
    assert set(setup["packages"]) == packages
    assert folders == {k: v for k, v in PACKAGE_DIRS.items() if k != "topoprune"}
