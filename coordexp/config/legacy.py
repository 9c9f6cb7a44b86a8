"""Keys the legacy trainer had (or removed) that coordexp refuses by name, with the replacement.

A plain "unknown key" would be correct but unhelpful for someone porting a legacy YAML, so these get their
own messages. They are checked on the merged mapping (canonical layout) before structuring and removed from
it, so each problem is reported once.

``REMOVED`` keys are gone for good. Keys the schema accepts but no code reads yet are not refused here: they are
listed, with the reason, in ``coordexp.bind.unread``, and a test keeps that table honest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"

# (section path, key) -> what to do instead
REMOVED: dict[tuple[str, str], str] = {
    ("", "extra"): "top-level `extra:` is not a section; put trainer sections under `custom.extra` "
    "(or top-level `rollout_matching:` / `stage2_ab:`)",
    ("", "inherit"): "use `extends:` (a path or a list of paths relative to this file)",
    ("custom", "coord_loss"): "the Stage-1 coord_loss path is gone; Stage-2 coord loss weights live in `custom.coord_soft_ce_w1`",
    ("training", "packing_length"): "the packing row length is `global_max_length`",
    ("training", "eval_packing"): "evaluation never packs (it is rollout -> parse -> match only)",
    (RM, "temperature"): f"use `{RM}.decoding.temperature`",
    (RM, "top_p"): f"use `{RM}.decoding.top_p`",
    (RM, "top_k"): f"use `{RM}.decoding.top_k`",
    (RM, "rollout_generate_batch_size"): f"use `{RM}.decode_batch_size`",
    (RM, "rollout_infer_batch_size"): f"use `{RM}.decode_batch_size`",
    (RM, "post_rollout_pack_scope"): "use `training.packing_mode` (`carry` | `step`); under stage2_ab_training "
    f"`{AB}.channel_b.mode` selects it",
    (f"{RM}.vllm.server", "base_url"): f"list servers as `{RM}.vllm.server.servers: [{{base_url: ..., group_port: ...}}]`",
    (f"{RM}.vllm.server", "group_port"): f"list servers as `{RM}.vllm.server.servers: [{{base_url: ..., group_port: ...}}]`",
    (AB, "bbox_l1_weight"): f"use `{AB}.bbox_smoothl1_weight`",
    (AB, "bbox_giou_weight"): f"use `{AB}.bbox_ciou_weight` (GIoU is not supported)",
    (f"{AB}.channel_b", "async"): f"async actor-learner mode is gone; use `{AB}.channel_b.mode: step` "
    "(with `enable_pipeline: true` in vLLM server mode for overlap)",
    (f"{AB}.channel_b", "reordered_gt_sft"): "the reordered-GT SFT path is gone; Channel-A is the GT teacher-forced channel",
    (f"{AB}.channel_b", "desc_ce_weight_matched"): f"matched desc tokens are never supervised; FN desc uses `{AB}.desc_ce_weight`",
    (f"{AB}.channel_b", "semantic_desc_gate"): f"the semantic desc gate is gone; use `{RM}.desc_monitor` for desc metrics",
    (f"{AB}.channel_b", "stop_neutral"): "the closing `}` and EOS are always supervised (stop-neutral masking is gone)",
    (f"{AB}.channel_b", "rollout_decode_batch_size"): f"use `{RM}.decode_batch_size`",
}


def _section(data: dict[str, Any], path: str) -> dict[str, Any] | None:
    node: Any = data
    for key in path.split(".") if path else ():
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def pop_removed_keys(data: dict[str, Any], *, display: Callable[[str], str] = str) -> list[tuple[str, str]]:
    """Remove every refused key from ``data`` (in place); one (canonical dotted key, message) per key found."""
    messages = []
    for (path, key), advice in REMOVED.items():
        if _pop(data, path, key):
            dotted = _dotted(path, key)
            messages.append((dotted, f"{display(dotted)}: legacy key has been removed. Fix: {advice}."))
    return messages


def _dotted(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _pop(data: dict[str, Any], path: str, key: str) -> bool:
    section = _section(data, path)
    if section is None or key not in section:
        return False
    del section[key]
    return True
