"""gspo.algos depends on torch and the standard library only."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import gspo.algos

ALGOS_DIR = Path(gspo.algos.__file__).parent
ALLOWED_TOP_LEVEL = {
    "collections", "inspect", "torch", "math", "warnings", "typing", "dataclasses", "functools", "__future__"
}


def test_import_in_fresh_interpreter_pulls_in_nothing_else():
    # torch itself imports numpy when it is installed, so modules are compared against a
    # baseline taken right after `import torch`: gspo.algos must add nothing but itself.
    code = (
        "import json, sys; import torch; before = set(sys.modules); import gspo.algos; "
        "print(json.dumps({'all': sorted(sys.modules), 'new': sorted(set(sys.modules) - before)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    loaded, new = set(modules["all"]), modules["new"]

    gspo_modules = sorted(m for m in loaded if m == "gspo" or m.startswith("gspo."))
    assert "gspo.algos" in gspo_modules
    assert [m for m in gspo_modules if m != "gspo" and not m.startswith("gspo.algos")] == []
    heavy = ("transformers", "numpy", "omegaconf")
    assert [m for m in new if m.split(".")[0] in heavy] == []
    assert [m for m in loaded if m.split(".")[0] in ("transformers", "omegaconf")] == []
    non_gspo_new = [m for m in new if m != "gspo" and not m.startswith("gspo.algos")]
    assert all(m.split(".")[0] in ALLOWED_TOP_LEVEL | set(sys.stdlib_module_names) for m in non_gspo_new), non_gspo_new


def test_source_imports_are_torch_stdlib_or_local():
    files = sorted(ALGOS_DIR.glob("*.py"))
    assert len(files) >= 8
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in ALLOWED_TOP_LEVEL, f"{path.name}: import {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    continue
                module = node.module or ""
                local = module == "gspo.algos" or module.startswith("gspo.algos.")
                ok = local or module.split(".")[0] in ALLOWED_TOP_LEVEL
                assert ok, f"{path.name}: from {module} import ..."
