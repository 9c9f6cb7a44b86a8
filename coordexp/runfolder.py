"""The run folder ``<output_dir>/<run_name>/`` and the checkpoints in it.

Layout::

    config.yaml            the resolved config the run started with (a resume checks it is unchanged)
    logging.jsonl          one JSON object per logged step / eval (coordexp.telemetry.sinks)
    events/                TensorBoard event files
    monitor_dumps/         step_XXXXXX.json + .md (coordexp.telemetry.monitor)
    rollouts.jsonl         every rollout, when record_rollouts is on (input of offline replay)
    checkpoint-<step>/     self-contained HF folders, see ``save``

A checkpoint is a folder that ``from_pretrained`` and ``model.model`` of a new run both load: the full
weights at its root (LoRA merged into a copy of the model, so the live model is never touched), with the
processor, tokenizer, chat template and ``coord_tokens.json``; plus what a resume needs: the adapter
(``adapter/``), optimizer, scheduler and RNG states (``coordexp.learn.checkpoint``) and
``trainer_state.json`` (step, data position, best metric, rollout-buffer and carry state).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordexp.errors import ConfigError

CONFIG_FILE, TRAINER_STATE = "config.yaml", "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def run_dir(output_dir: str, run_name: str) -> Path:
    return Path(output_dir) / run_name


def checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """The run's checkpoints, oldest first, by step."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(folder: Path) -> Path:
    """The newest complete checkpoint of ``folder`` (a run folder, or a checkpoint folder itself)."""
    if (folder / TRAINER_STATE).is_file():
        return folder
    complete = [p for _, p in checkpoints(folder) if (p / TRAINER_STATE).is_file()]
    if not complete:
        raise ConfigError(
            f"--resume {folder}: no checkpoint to resume from (no checkpoint-<step>/ with {TRAINER_STATE}); "
            "point --resume at a run folder that saved one (training.save_strategy) or at a checkpoint folder"
        )
    return complete[-1]


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))


def prune(folder: Path, *, keep: int | None, protect: Path | None) -> list[Path]:
    """Delete the oldest checkpoints beyond ``keep`` (``save_total_limit``), never ``protect`` (the best)."""
    if keep is None:
        return []
    ckpts = [p for _, p in checkpoints(folder)]
    removable = [p for p in ckpts if protect is None or p.resolve() != protect.resolve()]
    excess = len(ckpts) - keep
    removed = removable[: max(0, excess)]
    for p in removed:
        shutil.rmtree(p)
    return removed
