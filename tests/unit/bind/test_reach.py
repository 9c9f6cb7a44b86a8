"""Every schema key is read by some code path, or listed with its reason in coordexp.bind.unread."""

from __future__ import annotations

import warnings
from pathlib import Path

import attrs
import pytest

from coordexp.bind import bind, minimal_config
from coordexp.bind.reach import (
    declaration_problems,
    declarations,
    reach_report,
    schema_leaves,
    traced_reads,
)
from coordexp.bind.unread import UNREAD
from coordexp.config import load_config
from coordexp.config._fields import knob
from coordexp.config.schema_root import Config
from coordexp.spec.paths import REPO_ROOT

RM = "custom.extra.rollout_matching"
READERS = {"coordexp.bind.bind": lambda config: bind(config, env={})}


def probe_configs() -> list[Config]:
    """Configs whose union exercises every branch of bind: the shipped ones plus variants they lack."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = [load_config(p) for p in sorted((REPO_ROOT / "configs").rglob("*.yaml"))]
        ramp = "custom.extra.stage2_ab.schedule.b_ratio=[{until_step: 4, value: 0.5}, {value: 0.25}]"
        extra = [
            minimal_config("rollout_matching_sft"),
            minimal_config("stage2_ab_training"),
            minimal_config("stage2_ab_training", ("custom.extra.stage2_ab.schedule.pattern=null", ramp)),
        ]
    return shipped + extra


@pytest.fixture(scope="module")
def report() -> dict[str, set[str]]:
    return reach_report(probe_configs(), READERS, list(declarations()))


def test_every_leaf_is_reached_or_listed_unread(report):
    missing = sorted(schema_leaves() - set(report) - set(UNREAD))
    assert not missing, (
        "these config keys are accepted but no code path reads them (the legacy failure): read them through "
        "coordexp.bind, declare them in the reading module's CONFIG_READS, or list them with a reason in "
        f"coordexp/bind/unread.py: {missing}"
    )


def test_no_unread_entry_is_actually_read(report):
    stale = {key: sorted(report[key]) for key in UNREAD if key in report}
    assert not stale, f"remove these keys from coordexp/bind/unread.py, they are read now: {stale}"


def test_unread_table_names_only_schema_keys():
    assert not sorted(set(UNREAD) - schema_leaves())
    assert all(reason.strip() for reason in UNREAD.values())


def test_declarations_are_schema_keys_read_by_their_module():
    decls = list(declarations())
    assert {d.module for d in decls} >= {"coordexp.learn.optim", "coordexp.learn.tuner"}
    assert declaration_problems(decls, schema_leaves()) == []


# --- the mechanism itself ------------------------------------------------------------------------


def test_tracing_logs_exactly_the_fields_read_with_properties_and_list_items():
    config = minimal_config("rollout_matching_sft", (f"{RM}.vllm.server.servers=[{{base_url: 'http://h:1', group_port: 2}}]",))

    def reader(c):
        _ = c.training.seed
        _ = c.rollout_matching.candidate_top_k  # a property of Config, resolved through custom.extra
        _ = [s.base_url for s in c.rollout_matching.vllm.server.servers]

    reads = traced_reads(reader, config)
    assert {"training.seed", f"{RM}.candidate_top_k", f"{RM}.vllm.server.servers[].base_url"} <= reads
    assert "training.max_steps" not in reads and f"{RM}.vllm.server.servers[].group_port" not in reads
    assert traced_reads(lambda c: None, config) == frozenset()


def test_tracing_sees_only_the_branch_a_config_takes():
    sft, ab = minimal_config("rollout_matching_sft"), minimal_config("stage2_ab_training")
    key = "custom.extra.stage2_ab.desc_ce_weight"
    assert key not in traced_reads(READERS["coordexp.bind.bind"], sft)
    assert key in traced_reads(READERS["coordexp.bind.bind"], ab)


@attrs.frozen
class Section:
    used: int = knob(1, help="read")
    forgotten: int = knob(2, help="never read")


@attrs.frozen
class Root:
    section: Section = knob(help="s")


def test_a_new_key_that_nothing_reads_is_caught():
    leaves = schema_leaves(Root)
    assert leaves == {"section.used", "section.forgotten"}
    log: set[str] = set()
    from coordexp.bind.reach import _Recorder  # the proxy the traced readers receive

    _ = _Recorder(Root(Section()), "", log).section.used
    assert leaves - log == {"section.forgotten"}


def test_declaration_checks_catch_unknown_keys_and_stale_declarations(tmp_path: Path):
    pkg = tmp_path / "coordexp"
    pkg.mkdir()
    (pkg / "good.py").write_text('CONFIG_READS = ("training.seed",)\n\ndef f(t):\n    return t.seed\n')
    (pkg / "stale.py").write_text('CONFIG_READS = ("training.max_steps",)\n\ndef f(t):\n    return t.seed\n')
    (pkg / "typo.py").write_text('CONFIG_READS = ("training.maxsteps",)\n\ndef f(t):\n    return t.maxsteps\n')
    decls = list(declarations(pkg))
    assert [d.module for d in decls] == ["coordexp.good", "coordexp.stale", "coordexp.typo"]
    problems = declaration_problems(decls, schema_leaves())
    assert len(problems) == 2
    assert "coordexp.stale" in problems[0] and "`.max_steps`" in problems[0]
    assert "coordexp.typo" in problems[1] and "not a key of the schema" in problems[1]
