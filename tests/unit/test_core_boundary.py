"""The pure core stays pure: no torch, transformers, vllm or backends, statically or at import time."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import coordexp.core

FORBIDDEN = ("torch", "transformers", "vllm", "peft", "coordexp.backends", "coordexp.learn", "coordexp.config", "coordexp.bind")
CORE_DIR = Path(coordexp.core.__file__).parent


def _imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_core_module_imports_a_heavy_or_impure_package():
    offenders = {
        f"{p.name}: {name}"
        for p in sorted(CORE_DIR.glob("*.py"))
        for name in _imported_names(p)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert not offenders, f"coordexp.core must stay pure; move these imports out: {sorted(offenders)}"


def test_importing_every_core_module_loads_no_heavy_package():
    modules = [f"coordexp.core.{m.name}" for m in pkgutil.iter_modules([str(CORE_DIR)])]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {('torch', 'transformers', 'vllm', 'peft')!r}]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing coordexp.core pulled in: {out}"
