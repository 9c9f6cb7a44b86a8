"""The one table of schema keys that no code path reads yet, each with the reason.

The key-reach test (``tests/unit/bind/test_reach.py``, mechanism in ``coordexp.bind.reach``) fails for a key
that nothing reads unless it is listed here, and also for a key listed here that something does read: when
code starts reading a key (through ``coordexp.bind`` or a module's ``CONFIG_READS``), its line here goes.
A key listed here is accepted by the config and does nothing today; the reason says until when.
"""

from __future__ import annotations

from collections.abc import Mapping

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"


def _keys(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}" for n in names)


DEEPSPEED = ("the executor trains with DDP under torchrun, not DeepSpeed; the config refuses any value but null, "
             "and the key stays only so that legacy configs get that clear refusal instead of an unknown-key error")

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("by design only the config's length-budget check reads it (an estimate of the prompt length, nothing at "
     "runtime)", (f"{RM}.prompt_len_estimate",)),
    # vllm.* and offload.* are read by coordexp.bind.rollout.bind_vllm (colocate) and coordexp.bind.server
    ("server-mode weight sync goes through the installed vLLM's HTTP reload of a folder the server reads "
     "(docs/backends.md), not through the legacy `swift rollout` NCCL communicator group this port named; the key "
     "stays so legacy configs load, and an adapter for that server would read it",
     (f"{RM}.vllm.server.servers[].group_port",)),
    (DEEPSPEED, ("training.deepspeed",)),
)


def _table() -> dict[str, str]:
    out: dict[str, str] = {}
    for reason, keys in _GROUPS:
        for key in keys:
            if key in out:
                raise ValueError(f"coordexp.bind.unread lists {key!r} twice")
            out[key] = reason
    return out


UNREAD: Mapping[str, str] = _table()  # dotted key -> why nothing reads it yet
