"""The house rules of ``scclip/``, checked on its source (AST) rather than by reading it.

- no import cycle between modules (lazy, function-level imports count: they are still a layering cycle);
- no import of another module's underscore name (``from scclip.io._read import _helper``); importing a private
  *module* (``from scclip.io._read import read``) is how a package's ``__init__`` lists its public names;
- no module over 400 lines, no function over 100 lines.

Each rule is shown to fail on a tiny synthetic package that breaks it (the problems the layout had before the
redesign: a re-export at the bottom of a module closing a cycle, a sibling's private helper, oversized code).
Embedding and the app must not import the training loop: checked in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "scclip"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100


@dataclass
class Report:
    cycles: list[list[str]] = field(default_factory=list)
    private_imports: list[str] = field(default_factory=list)
    long_modules: list[str] = field(default_factory=list)
    long_functions: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return (
            [" -> ".join(c) for c in self.cycles]
            + self.private_imports
            + self.long_modules
            + self.long_functions
        )


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the package folder ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str, path: Path, modules: dict[str, Path], report: Report) -> set[str]:
    """The package modules ``module`` imports; underscore names imported from another module go to ``report``."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path.name == "__init__.py", node)
            if source not in modules and not any(f"{source}.{a.name}" in modules for a in node.names):
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in modules:  # ``from pkg import submodule``
                    targets.add(f"{source}.{alias.name}")
                    continue
                targets.add(source)
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and source != module:
                    report.private_imports.append(f"{module} imports {source}.{alias.name}")
    targets.discard(module)
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component with 2+ modules."""
    order, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v: str) -> None:  # Tarjan
        order[v] = low[v] = len(order)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_path_within(graph, set(comp)))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in order:
            visit(v)
    return found


def _path_within(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A cycle through the component's first module, found by breadth-first search inside the component."""
    start = min(comp)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def check_package(root: Path, *, max_module: int = MAX_MODULE_LINES, max_function: int = MAX_FUNCTION_LINES):
    """Every house-rule finding in the package folder ``root``."""
    modules = _module_names(root)
    report = Report()
    graph = {}
    for module, path in modules.items():
        graph[module] = _imports(module, path, modules, report)
        source = path.read_text()
        n_lines = len(source.splitlines())
        if n_lines > max_module:
            report.long_modules.append(f"{module} has {n_lines} lines (> {max_module})")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > max_function:
                    report.long_functions.append(f"{module}.{node.name} has {length} lines (> {max_function})")
    report.cycles = _cycles(graph)
    return report


# ----------------------------------------------------------------------------------------- the real package
def test_scclip_follows_the_house_rules():
    report = check_package(PACKAGE)
    assert report.problems == [], "\n".join(report.problems)


def test_the_check_sees_the_whole_package():
    modules = _module_names(PACKAGE)
    for expected in ("scclip.io._read", "scclip.genome._checks", "scclip.api._embed", "scclip.training._loop"):
        assert expected in modules
    graph = {m: _imports(m, p, modules, Report()) for m, p in modules.items()}
    assert "scclip.io._checks" in graph["scclip.io._read"]  # a sibling import is an edge
    assert "scclip.features" in graph["scclip.api._inputs"]  # ``from scclip.features import ...`` too


def test_embedding_and_the_app_logic_never_import_the_training_loop():
    code = textwrap.dedent(
        """
        import sys
        import scclip, scclip.explore
        from scclip.datasets import synthetic_multiome
        scclip.embed(scclip.load_pretrained("demo-synthetic"), synthetic_multiome(60, seed=0))
        print(sorted(m for m in sys.modules if m.startswith("scclip.training")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------- the check fails on broken packages
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_clean_synthetic_package_passes(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.io import read\n",
            "io/__init__.py": "from pkg.io._read import read\n",
            "io/_read.py": "from pkg.io._checks import check\n\ndef read():\n    return check()\n",
            "io/_checks.py": "def check():\n    return 1\n",
        },
    )
    assert check_package(root).problems == []


def test_a_re_export_at_the_bottom_closing_a_cycle_fails(tmp_path):
    """genome <-> gene_ids, held together by ``from pkg.gene_ids import ...  # noqa: E402`` at the bottom."""
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "genome.py": "def alias(x):\n    return x\n\nfrom pkg.gene_ids import match  # noqa: E402\n",
            "gene_ids.py": "from pkg.genome import alias\n\ndef match(x):\n    return alias(x)\n",
        },
    )
    assert check_package(root).cycles == [["pkg.gene_ids", "pkg.genome", "pkg.gene_ids"]]


def test_a_lazy_import_cycle_through_the_package_root_fails(tmp_path):
    """``pretrained`` importing the root's ``__version__`` while the root imports ``pretrained``."""
    root = _package(
        tmp_path,
        {
            "__init__.py": "__version__ = '1'\nfrom pkg.pretrained import load\n",
            "pretrained.py": "def load():\n    from pkg import __version__\n    return __version__\n",
        },
    )
    assert check_package(root).cycles == [["pkg", "pkg.pretrained", "pkg"]]


def test_a_relative_import_cycle_fails(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "metrics/__init__.py": "from ._paired import foscttm\n",
            "metrics/_paired.py": "from . import _labels\n\ndef foscttm():\n    return 0\n",
            "metrics/_labels.py": "from ._paired import foscttm\n",
        },
    )
    assert check_package(root).cycles == [["pkg.metrics._labels", "pkg.metrics._paired", "pkg.metrics._labels"]]


def test_importing_a_siblings_underscore_name_fails(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "io_checks.py": "def _to_csr(x):\n    return x\n",
            "stream.py": "from pkg.io_checks import _to_csr\n",
            "own.py": "def _helper():\n    return 1\n\ndef public():\n    from pkg.own import _helper\n    return _helper()\n",
        },
    )
    report = check_package(root)
    assert report.private_imports == ["pkg.stream imports pkg.io_checks._to_csr"]
    assert report.cycles == []


@pytest.mark.parametrize(("lines", "fails"), [(400, False), (401, True)])
def test_a_module_over_400_lines_fails(tmp_path, lines, fails):
    root = _package(tmp_path, {"__init__.py": "", "big.py": "x = 1\n" * lines})
    assert bool(check_package(root).long_modules) is fails


@pytest.mark.parametrize(("body", "fails"), [(99, False), (100, True)])
def test_a_function_over_100_lines_fails(tmp_path, body, fails):
    """``def`` line + ``body`` lines: 100 lines pass, 101 fail (methods and nested functions count too)."""
    source = "class Parser:\n    def build(self):\n" + "        x = 1\n" * body
    root = _package(tmp_path, {"__init__.py": "", "cli.py": source})
    report = check_package(root)
    assert bool(report.long_functions) is fails
    if fails:
        assert report.long_functions == ["pkg.cli.build has 101 lines (> 100)"]
