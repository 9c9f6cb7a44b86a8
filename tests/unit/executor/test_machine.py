"""The step machine: its diagram and the state trace of every kind of step (snapshots), and its guards."""

from __future__ import annotations

import pytest
from transitions import MachineError

from coordexp.machine import LOG, STAGES, TRANSITIONS, StepMachine, mermaid


class Work:
    """Answers the guards as told and records the stage calls."""

    def __init__(self, *, channel_a=False, reuse=False, eval_=False, segments=True):
        self.answers = {"is_channel_a": channel_a, "reuses_buffer": reuse, "is_eval": eval_, "has_segments": segments}
        self.calls: list[str] = []

    def __getattr__(self, name):
        if name in {"answers", "calls"}:
            raise AttributeError(name)
        if name in self.answers:
            return lambda: self.answers[name]
        return lambda: self.calls.append(name)


VARIANTS = {
    "channel_b": dict(),
    "channel_a": dict(channel_a=True),
    "buffer_reuse": dict(reuse=True),
    "buffer_reuse_beats_channel_a": dict(reuse=True, channel_a=True),
    "empty_pack": dict(segments=False),
    "channel_a_empty": dict(channel_a=True, segments=False),
}


def test_mermaid_diagram(snapshot):
    assert mermaid() == snapshot


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_train_step_trace(variant, snapshot):
    work = Work(**VARIANTS[variant])
    trace = StepMachine(work).run_train_step()
    assert trace == snapshot
    # every state entered ran its stage, once, in order
    assert work.calls == [
        {"BuildTarget": "build_target"}.get(s, s.lower()) for s in trace
    ]


def test_eval_trace_skips_target_and_learning(snapshot):
    work = Work(eval_=True)
    machine = StepMachine(work)
    assert machine.run_eval() == snapshot
    assert machine.run_eval() == ["Rollout", "Parse", "Match", "Log"]  # reusable: back at Idle after each run


def test_no_escape_hatches():
    machine = StepMachine(Work())
    assert not hasattr(machine, "to_Learn")
    machine.train()
    with pytest.raises(MachineError):
        machine.finish()  # only Log may finish


def test_every_stage_is_reachable_and_log_ends_every_path():
    dests = {dest for _, _, dest, _ in TRANSITIONS}
    assert set(STAGES) <= dests
    assert {src for trig, src, _, _ in TRANSITIONS if trig == "finish"} == {LOG}


def test_the_training_guide_draws_the_machine_as_it_is():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "training.md").read_text(encoding="utf-8")
    arrows = lambda text: [line.strip() for line in text.splitlines() if "-->" in line and "[*]" not in line]  # noqa: E731
    assert arrows(doc) == arrows(mermaid())
