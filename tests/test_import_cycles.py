"""No import cycles among gspo's modules, and the layers the configuration sits between.

The walk is static (ast), so it sees every import a module can run:

- imports inside functions count: a deferred import still makes the two modules depend on each other, it only
  hides the cycle until the function runs;
- imports under ``if TYPE_CHECKING:`` do not: they never run;
- relative imports are resolved against the importing module's package;
- ``from a.b import c`` depends on the module ``a.b.c`` when it is one, else on ``a.b``; importing ``a.b.c`` also
  runs the package ``a.b`` first, which counts too, unless ``a.b`` encloses the importing module (a package's own
  modules load while it is being imported).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import gspo

PACKAGE_ROOT = Path(gspo.__file__).parent


def module_files(package_dir: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module under ``package_dir``."""
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, (ast.Name, ast.Attribute)) and ast.unparse(test).endswith("TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (see the module docstring for what counts)."""
    modules = module_files(package_dir)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        edges = set()
        for target in targets:
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):  # the module and the packages run before it
                ancestor = ".".join(parts[:depth])
                encloses_importer = name == ancestor or name.startswith(ancestor + ".")
                if ancestor in modules and (ancestor == target or not encloses_importer):
                    edges.add(ancestor)
        edges.discard(name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.append(_closed_path(graph, set(component)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle through the component, for the failure message: a -> b -> ... -> a."""
    start = min(component)
    path, seen = [start], {start}
    while True:
        step = sorted(t for t in graph[path[-1]] if t in component)
        following = next((t for t in step if t not in seen), None)
        if following is None:
            return path + [next(t for t in step if t in seen)]
        path.append(following)
        seen.add(following)


def test_gspo_has_no_import_cycles():
    cycles = import_cycles(import_graph(PACKAGE_ROOT))
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_walk_finds_deferred_relative_and_package_cycles(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "def f():\n    from .b import g\n",  # deferred and relative
        "b.py": "from pkg import a\n",
        "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import d\n",  # never runs
        "d.py": "import pkg.c\n",
        "sub/__init__.py": "from pkg.sub.inner import x\n",  # a package importing its own module: no cycle
        "sub/inner.py": "from pkg.e import y\nx = 1\n",
        "e.py": "def y():\n    from pkg.sub import inner\n",  # runs pkg.sub first: a cycle through the package
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package)
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"}
    assert graph["pkg.sub"] == {"pkg.sub.inner"} and graph["pkg.e"] == {"pkg.sub", "pkg.sub.inner"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.e", "pkg.sub", "pkg.sub.inner", "pkg.e"]]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_engines_import_no_config_and_config_imports_no_data_or_rewards():
    # ConfigError lives in gspo.errors: the engines raise it without the config package.
    engines = _modules_after("import gspo.rollout.hf, gspo.rollout.vllm_engine, gspo.rollout.registry")
    assert not {m for m in engines if m.startswith("gspo.config")}
    # Validation takes the choices from the schema and the registries, not from the data and reward layers.
    loaded = _modules_after("from gspo.config import load_config; load_config()")
    assert not {m for m in loaded if m.startswith(("gspo.data", "gspo.rewards", "gspo.trainer"))}


def test_the_schema_accepts_the_choices_data_and_rewards_accept():
    from gspo.config import CHAT_TEMPLATE_MODES, REWARD_ON_ERROR_MODES
    from gspo.data.dataset import CHAT_TEMPLATE_MODES as DATASET_MODES
    from gspo.rewards.manager import ON_ERROR_MODES

    assert CHAT_TEMPLATE_MODES == DATASET_MODES and REWARD_ON_ERROR_MODES == ON_ERROR_MODES
