"""Runner case kinds that compute more than a passthrough: the loss runner's span CE and pack_select's sweep."""

from __future__ import annotations

import pytest

from coordexp.spec.runners import pack_select, run_scenario


def _span_ce(**variants):
    data = {"case": "span_ce", "ids": [10, 11, 12, 20, 21, 22], "prefix_len": 3,
            "predicted": [10, 11, 12, 20, 30, 22], "variants": variants}
    return run_scenario("loss", data)["variants"]


def test_span_ce_supervises_the_tail_and_listed_prefix_positions_only():
    out = _span_ce(plain={}, with_prefix={"prefix_ce": [[1, 2.0]]})
    assert out["plain"]["supervised_positions"] == [3, 4, 5]
    assert out["with_prefix"]["supervised_positions"] == [1, 3, 4, 5]
    assert out["with_prefix"]["weight"] == pytest.approx(5.0)  # prefix weight 2 + three tail tokens


def test_span_ce_grows_with_a_mispredicted_token_and_drops_when_it_is_ignored():
    out = _span_ce(plain={}, ignored={"tail_ignore": [1]})  # tail index 1 = assistant position 4 (mispredicted)
    assert out["ignored"]["supervised_positions"] == [3, 5]
    assert out["plain"]["ce_mean"] > 1.0 > out["ignored"]["ce_mean"]


def test_span_ce_refuses_a_prediction_table_of_the_wrong_length():
    data = {"case": "span_ce", "ids": [1, 2, 3], "prefix_len": 1, "predicted": [1, 2], "variants": {}}
    assert run_scenario("loss", data)["error"]["message"].startswith("span_ce: predicted has 2 ids")


def test_exhaustive_selection_reports_zero_violations_for_the_real_selector():
    out = run_scenario("pack_select", {"exhaustive": {"max_segments": 3, "min_length": 1, "max_length": 6, "cap": 8}})
    assert out["buffers"] == 6 + 36 + 216
    assert set(out["violations"].values()) == {0} and out["first_violations"] == []
    assert out["fuller_than_fifo"] > 0  # e.g. [3, 4, 5]: FIFO packs 3 + 4 = 7, bin packing 3 + 5 = 8


def test_exhaustive_selection_catches_a_selector_below_fifo(monkeypatch):
    from coordexp.core.pack import Selection

    def oldest_only(lengths, cap):
        return Selection((0,), lengths[0], lengths[0], used_binpacking=False)

    monkeypatch.setattr(pack_select, "select_segments", oldest_only)
    out = run_scenario("pack_select", {"exhaustive": {"max_segments": 2, "min_length": 1, "max_length": 3, "cap": 4}})
    # two-segment buffers whose lengths fit together: (1,1) (1,2) (1,3) (2,1) (2,2) (3,1)
    assert out["violations"]["below_fifo"] == 6
    assert out["first_violations"][0] == {"lengths": [1, 1], "indices": [0], "fifo_total": 2}


def test_exhaustive_selection_refuses_an_oversized_sweep():
    out = run_scenario("pack_select", {"exhaustive": {"max_segments": 6, "min_length": 1, "max_length": 10, "cap": 10}})
    assert "lower max_segments" in out["error"]["message"]
