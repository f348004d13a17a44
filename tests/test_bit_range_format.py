"""format_bit_range writes --eval-bits lengths truly: the inverse of parse_bit_range.

experiments/adder.py printed "every evaluated length (3..4096 bits)" for
``--eval-bits 3..5,4096``, which evaluated 3, 4, 5 and 4096 only.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import run_experiment

from jaxseq.tasks.adder.data import MAX_BITS, format_bit_range, parse_bit_range

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "adder.py"


@pytest.mark.parametrize(("lengths", "text"), [
    ([3, 4, 5, 4096], "3..5, 4096"),
    ([4096, 5, 3, 4, 4], "3..5, 4096"),
    ([3], "3"),
    ([3, 4], "3, 4"),
    ([3, 4, 8], "3, 4, 8"),
    (list(range(3, 20)), "3..19"),
    ([2, 3, 4, 6, 7, 8, 10, 32, 64, 256], "2..4, 6..8, 10, 32, 64, 256"),
])
def test_explicit_cases(lengths, text):
    assert format_bit_range(lengths) == text
    assert parse_bit_range(text) == sorted(set(lengths))


def test_empty_is_refused():
    with pytest.raises(ValueError, match="no bit lengths"):
        format_bit_range([])


def test_round_trip_property():
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.lists(st.integers(2, 300), min_size=1, max_size=60)
                      | st.lists(st.integers(2, MAX_BITS), min_size=1, max_size=8))
    def round_trip(lengths):
        text = format_bit_range(lengths)
        assert parse_bit_range(text) == sorted(set(lengths))
        # Compact: no item "a..b" shorter than 3 lengths, no 3 consecutive listed singly.
        singles = [int(i) for i in text.split(", ") if ".." not in i]
        assert not any(v + 1 in singles and v + 2 in singles for v in singles)
        for low, high in re.findall(r"(\d+)\.\.(\d+)", text):
            assert int(high) - int(low) >= 2
        assert format_bit_range(parse_bit_range(text)) == text  # canonical

    round_trip()


def test_adder_prints_the_evaluated_lengths(tmp_path):
    result: subprocess.CompletedProcess = run_experiment(
        SCRIPT, "--samples", "200", "--epochs", "1", "--eval-bits", "3..5,40",
        "--eval-samples", "20", "--out-dir", str(tmp_path / "run"), "--no-progress",
        timeout=240)
    assert result.returncode == 0, result.stderr
    assert "eval_bits: 3..5, 40 (4 lengths)" in result.stdout
    assert re.search(r"seeds reached 100% exact-sum accuracy at every evaluated length "
                     r"\(3\.\.5, 40 bits\)", result.stdout), result.stdout
    assert "3..40" not in result.stdout
