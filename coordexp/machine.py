"""The step as a state machine: which stage runs after which, and under which guard.

    Schedule -> Rollout -> Parse -> Match -> BuildTarget -> Pack -> Learn -> Log

The whole flow is the table ``TRANSITIONS`` below; nothing else decides where a step goes next. Each row is
``(trigger, source, dest, guard)``; rows with the same trigger and source are tried in table order and the
first whose guard holds wins (transitions' own rule); ``!guard`` means the guard must not hold, and a row
without a guard is the fallback.

- Channel A (Stage-2 AB) skips Rollout..Match: its target is the GT, built in BuildTarget.
- A buffer-reuse M-step (``rollout_buffer.m_steps > 1``) goes straight to Pack with the targets cached on the
  window's E-step; it never rolls out. The reuse check comes first: a reuse step is always Channel B.
- An empty pack (every sample of the step dropped and counted) goes to Log without learning.
- Evaluation enters at Rollout and leaves after Match: no target, no loss.
- Offline replay (``python -m coordexp.replay``) enters at Schedule like training, with the ``recorded``
  backend, and leaves after Pack: the targets and packs are built exactly as in training, nothing learns.

The machine only sequences; each state's work is a method of the ``StageWork`` the executor passes in
(``rollout``, ``parse``, ...), called when the state is entered. ``auto_transitions=False``: there is no
``to_<state>`` escape hatch, so a step can only move along the table. ``python -m coordexp.run --config C
--print-machine`` prints the mermaid diagram drawn from this same table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from transitions import EventData, Machine

IDLE, SCHEDULE, ROLLOUT, PARSE, MATCH = "Idle", "Schedule", "Rollout", "Parse", "Match"
BUILD_TARGET, PACK, LEARN, LOG = "BuildTarget", "Pack", "Learn", "Log"
STAGES = (SCHEDULE, ROLLOUT, PARSE, MATCH, BUILD_TARGET, PACK, LEARN, LOG)
STATES = (IDLE, *STAGES)

# trigger      source         dest           guard
TRANSITIONS: tuple[tuple[str, str, str, str | None], ...] = (
    ("train",     IDLE,          SCHEDULE,      None),
    ("evaluate",  IDLE,          ROLLOUT,       None),
    ("replay",    IDLE,          SCHEDULE,      None),
    ("advance",   SCHEDULE,      PACK,          "reuses_buffer"),
    ("advance",   SCHEDULE,      BUILD_TARGET,  "is_channel_a"),
    ("advance",   SCHEDULE,      ROLLOUT,       None),
    ("advance",   ROLLOUT,       PARSE,         None),
    ("advance",   PARSE,         MATCH,         None),
    ("advance",   MATCH,         LOG,           "is_eval"),
    ("advance",   MATCH,         BUILD_TARGET,  "!is_eval"),
    ("advance",   BUILD_TARGET,  PACK,          None),
    ("advance",   PACK,          LOG,           "!has_segments"),
    ("advance",   PACK,          LOG,           "is_replay"),
    ("advance",   PACK,          LEARN,         None),
    ("advance",   LEARN,         LOG,           None),
    ("finish",    LOG,           IDLE,          None),
)  # fmt: skip

GUARDS = ("reuses_buffer", "is_channel_a", "is_eval", "is_replay", "has_segments")


class StageWork(Protocol):
    """What the executor supplies: the guards' answers and one method per stage (lower-case state name)."""

    def reuses_buffer(self) -> bool: ...
    def is_channel_a(self) -> bool: ...
    def is_eval(self) -> bool: ...
    def has_segments(self) -> bool: ...

    def schedule(self) -> None: ...
    def rollout(self) -> None: ...
    def parse(self) -> None: ...
    def match(self) -> None: ...
    def build_target(self) -> None: ...
    def pack(self) -> None: ...
    def learn(self) -> None: ...
    def log(self) -> None: ...


def _method_name(state: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(state))


class StepMachine:
    """Drives one ``StageWork`` through the table and records the states it visits.

    ``run_train_step()`` / ``run_eval()`` / ``run_replay()`` return the visited trace (``["Schedule", "Rollout",
    ...]``), which the executor logs per step and the tests snapshot per variant. ``is_replay`` is the machine's
    own guard: whether this run was started by ``replay``, so no work object has to answer it.
    """

    def __init__(self, work: StageWork, *, trace: list[str] | None = None, machine_class: type[Machine] = Machine,
                 **machine_kwargs: object) -> None:
        self.work = work
        self.trace: list[str] = [] if trace is None else trace  # filled as states are entered (Log sees it whole)
        self.replaying = False
        self.machine = machine_class(
            model=self,
            states=[{"name": s, "on_enter": self._on_enter(s)} if s != IDLE else s for s in STATES],
            transitions=[_row(*row) for row in TRANSITIONS],
            initial=IDLE,
            auto_transitions=False,
            send_event=True,
            **machine_kwargs,
        )

    def _on_enter(self, state: str) -> Callable[[EventData], None]:
        stage = getattr(self.work, _method_name(state))

        def enter(_event: EventData) -> None:
            self.trace.append(state)
            stage()

        return enter

    # guards: transitions calls them on the model with the event; the work object answers
    def reuses_buffer(self, _event: EventData) -> bool:
        return self.work.reuses_buffer()

    def is_channel_a(self, _event: EventData) -> bool:
        return self.work.is_channel_a()

    def is_eval(self, _event: EventData) -> bool:
        return self.work.is_eval()

    def has_segments(self, _event: EventData) -> bool:
        return self.work.has_segments()

    def is_replay(self, _event: EventData) -> bool:
        return self.replaying

    def _run(self, trigger: str) -> list[str]:
        self.trace.clear()
        self.replaying = trigger == "replay"
        getattr(self, trigger)()
        while self.state != LOG:  # type: ignore[attr-defined]  # set by transitions
            self.advance()  # type: ignore[attr-defined]
        self.finish()  # type: ignore[attr-defined]
        return list(self.trace)

    def run_train_step(self) -> list[str]:
        return self._run("train")

    def run_eval(self) -> list[str]:
        return self._run("evaluate")

    def run_replay(self) -> list[str]:
        """One recorded step through Schedule..Pack with the work's (recorded) backend; never Learn."""
        return self._run("replay")


def _row(trigger: str, source: str, dest: str, guard: str | None) -> dict[str, object]:
    row: dict[str, object] = {"trigger": trigger, "source": source, "dest": dest}
    if guard is not None:
        row["unless" if guard.startswith("!") else "conditions"] = guard.lstrip("!")
    return row


class _DiagramWork:
    """Guards and stages that do nothing: enough to build the machine for drawing it."""

    def __getattr__(self, name: str) -> Callable[[], object]:
        return lambda: False


def mermaid() -> str:
    """The machine as a mermaid ``stateDiagram-v2`` (what ``--print-machine`` prints)."""
    from transitions.extensions import GraphMachine

    diagram = StepMachine(_DiagramWork(), machine_class=GraphMachine, graph_engine="mermaid", show_conditions=True)
    return diagram.machine.get_graph().draw(None)
