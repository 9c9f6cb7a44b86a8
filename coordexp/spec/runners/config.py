"""Runner for ``Transition: config`` scenarios: a config mapping through loading and validation.

Input: ``{"yaml": {...}, "overrides": ["a.b=v", ...], "world_size": n}`` (overrides and world_size optional;
world_size stands in for the WORLD_SIZE environment variable, the process environment is never read);
``{"files": {"name.yaml": {...}, ...}, "config": "name.yaml", ...}`` to exercise ``extends`` between files
(written to a temporary folder, shown as ``<tmp>`` in messages); or ``{"cases": [<input>, ...]}`` for a
scenario that lists several variants. Output per case:
``{"ok": true, "warnings": [...], "resolved": {...}}`` or ``{"error": {"type": "ConfigError", "messages": [...]}}``.
Opt-in extras of a loaded case: ``"show_keys": ["training.per_device_eval_batch_size", ...]`` adds those dotted
keys' resolved values under ``"shown"``; ``"bound_decoding": true`` adds ``coordexp.bind.bind_decoding``'s record
(what every rollout backend decodes with) under ``"bound_decoding"``.
"""

from __future__ import annotations

import tempfile
import warnings
from operator import attrgetter
from pathlib import Path
from typing import Any

import attrs
import yaml

from coordexp.bind import bind_decoding
from coordexp.config import Loaded, derive, load, load_config_data, validate
from coordexp.config.plan import PREVIEW_STEPS, channel_at
from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError, ConfigWarning
from coordexp.spec.runners import each_case

TRANSITION = "config"


def _resolved(config: Config, env: dict[str, str]) -> dict[str, Any]:
    d = derive(config, env)
    out: dict[str, Any] = {
        "trainer_variant": config.custom.trainer_variant,
        "world_size": d.world_size,
        "gradient_accumulation_steps": d.gradient_accumulation_steps,
        "rollouts_per_step": d.rollouts_per_step,
        "packing_length": d.packing_length,
        "packing_mode": d.packing_mode,
    }
    rm = config.rollout_matching
    if rm is not None:
        out["rollout"] = {
            "backend": rm.rollout_backend if rm.rollout_backend == "hf" else f"vllm/{rm.vllm.mode}",
            "decode_batch_size": rm.decode_batch_size,
            "decoding": attrs.asdict(rm.decoding),
            "repeat_terminate": attrs.asdict(rm.repeat_terminate),
        }
    if config.stage2_ab is not None:
        out["schedule_preview"] = "".join(channel_at(config.stage2_ab.schedule, s) for s in range(PREVIEW_STEPS))
    return out


def _load_files(case: dict[str, Any]) -> Loaded:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        for name, content in case["files"].items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(yaml.safe_dump(content, sort_keys=False), encoding="utf-8")
        try:
            return load(root / case["config"], overrides=case.get("overrides", ()))
        except ConfigError as exc:
            raise ConfigError([m.replace(str(root), "<tmp>") for m in exc.messages]) from exc


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    env = {"WORLD_SIZE": str(case["world_size"])} if case.get("world_size") is not None else {}
    try:
        if "files" in case:
            loaded = _load_files(case)
        else:
            loaded = load_config_data(case["yaml"], overrides=case.get("overrides", ()), source="<fixture>")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            found = validate(loaded.config, env=env, display=loaded.display)
    except ConfigError as exc:
        return {"error": {"type": "ConfigError", "messages": exc.messages}}
    out = {"ok": True, "warnings": found, "resolved": _resolved(loaded.config, env)}
    if case.get("show_keys"):
        out["shown"] = {key: attrgetter(key)(loaded.config) for key in case["show_keys"]}
    if case.get("bound_decoding"):
        out["bound_decoding"] = attrs.asdict(bind_decoding(loaded.config))
    return out


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
