"""bench.timing: the paired protocol's call counts and the rows of a case's table."""

from __future__ import annotations

from bench.timing import Entry, method_rows, paired


def test_paired_times_the_reference_right_before_each_run_of_the_method() -> None:
    calls: list[str] = []
    r = paired(lambda: calls.append("m") or len(calls), lambda: calls.append("ref"), 3, warmup=1)
    assert calls == ["ref", "m"] * 4  # one warm-up, then three timed pairs
    assert r["out"] == 8 and len(r["ratios"]) == len(r["refs"]) == 3
    assert min(r["ratios"]) <= r["ratio"] <= max(r["ratios"]) and r["ref_seconds"] > 0


def test_method_rows_give_each_method_its_row_or_the_error_it_raised() -> None:
    def broken() -> None:
        raise ValueError("this peer cannot run this model")

    entries = [Entry("works", lambda: 41 + 1, 2), Entry("broken", broken, 2, warmup=0)]
    rows = method_rows(entries, lambda: None, lambda name, r: {"method": name, "out": r["out"]})
    assert rows == [
        {"method": "works", "out": 42},
        {"method": "broken", "error": "ValueError: this peer cannot run this model"},
    ]
