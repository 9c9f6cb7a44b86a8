"""Runner for ``Transition: launcher``: ``python -m coordexp.launch ... --dry-run`` on a config, nothing started.

Input: ``{"yaml": {...config...}, "args": ["server_gpus=0,1", "train_gpus=2", ...]}`` or ``{"cases": [...]}``.
The config is written to a temporary folder (``config=`` is added to the arguments). Output per case: the exit
code, and either the printed commands (each as ``{"role", "env", "argv"}``, the interpreter shown as
``<python>`` and the temporary folder as ``<tmp>``) or the first line of the refusal on stderr.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from coordexp.errors import SpecError
from coordexp.spec.runners import each_case

TRANSITION = "launcher"
_ENV_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _commands(stdout: str, tmp: str) -> list[dict[str, Any]]:
    out, role = [], None
    for line in stdout.splitlines():
        if line.startswith("# "):
            role = line[2:].split(" (")[0]
            continue
        words = [w.replace(sys.executable, "<python>").replace(tmp, "<tmp>") for w in shlex.split(line)]
        n = next(i for i, w in enumerate(words) if not _ENV_WORD.match(w))
        out.append({"role": role, "env": dict(w.split("=", 1) for w in words[:n]), "argv": words[n:]})
    return out


def _run_one(case: Any) -> dict[str, Any]:
    from coordexp import launch

    if not isinstance(case, dict) or set(case) != {"yaml", "args"}:
        raise SpecError(f"launcher fixture case needs exactly 'yaml' and 'args', got {case!r}")
    with tempfile.TemporaryDirectory() as raw:
        tmp = str(Path(raw).resolve())
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(case["yaml"]), encoding="utf-8")
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = launch.main(["--dry-run", *case["args"], f"config={path}"])
        if code != 0:
            lines = [ln.strip() for ln in stderr.getvalue().replace(tmp, "<tmp>").splitlines() if ln.strip()]
            return {"exit": code, "refusal": lines}
        return {"exit": code, "commands": _commands(stdout.getvalue(), tmp)}


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
