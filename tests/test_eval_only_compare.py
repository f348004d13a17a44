"""--eval-only: saved and re-scored test scores compared to float rounding; an edited
config.json or a damaged results file is a one-line error (exit 2).

The "to float rounding" case is what another device count or backend produces (sums in
another order); it is made here by editing the saved numbers of a tiny run by amounts
chosen by hand, and the expected lines are formatted by the test from those numbers.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
from conftest import run_experiment

from jaxseq.tasks.mnist.task import EVAL_LOSS_RTOL, compare_scores


def assert_one_line_exit_2(result, *mentions):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("mnist.py: error: --eval-only: "), lines[0]
    for text in mentions:
        assert text in lines[0], lines[0]


# --- the rule ------------------------------------------------------------------------


def test_tolerance_is_the_documented_one():
    assert EVAL_LOSS_RTOL == 1e-5


@pytest.mark.parametrize("accuracy, loss, expected", [
    (0.9123, 0.301234567, "equal"),
    (0.9124, 0.301234567, "rounding"),             # one example of 10,000 more
    (0.9122, 0.301234567 * (1 + 9e-6), "rounding"),  # one fewer, loss 9e-6 relative
    (0.9123, 0.301234567 * (1 - 9e-6), "rounding"),
    (0.9125, 0.301234567, "differs"),              # two examples
    (0.9123, 0.301234567 * (1 + 2e-5), "differs"),
    (0.9124, 0.301234567 * (1 + 2e-5), "differs"),
    (0.9123, math.nan, "differs"),
])
def test_compare_scores(accuracy, loss, expected):
    assert compare_scores(0.9123, 0.301234567, accuracy, loss, 10000) == expected


def test_compare_scores_one_example_depends_on_the_test_size():
    # 1/100 apart: one example of 100, a hundred of 10,000
    assert compare_scores(0.5, 1.0, 0.51, 1.0, 100) == "rounding"
    assert compare_scores(0.5, 1.0, 0.51, 1.0, 10000) == "differs"
    with pytest.raises(ValueError, match="num_examples must be a positive integer"):
        compare_scores(0.5, 1.0, 0.5, 1.0, 0)


# --- through the script --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mnist_dir):
    run_dir = tmp_path_factory.mktemp("runs") / "gru"
    result = run_experiment("mnist.py", "--cell", "gru", "--hidden-size", "8", "--epochs", "1",
                            "--train-subset", "320", "--batch-size", "32", "--no-progress",
                            "--data-dir", str(mnist_dir), "--out-dir", str(run_dir))
    assert result.returncode == 0, result.stderr
    return run_dir


def edited_copy(run_dir, tmp_path, file, edit):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    content = json.loads((copy / file).read_text())
    edit(content)
    (copy / file).write_text(json.dumps(content))
    return copy


def eval_only(run_dir, mnist_dir):
    return run_experiment("mnist.py", "--eval-only", str(run_dir), "--data-dir", str(mnist_dir))


def test_same_scores_equal(tiny_run, mnist_dir):
    result = eval_only(tiny_run, mnist_dir)
    assert result.returncode == 0, result.stderr
    assert "gru: equals the saved test accuracy and loss in gru_results.json" in result.stdout


def test_scores_within_rounding_agree(tiny_run, mnist_dir, tmp_path):
    saved = json.loads((tiny_run / "gru_results.json").read_text())
    accuracy, loss = saved["test_accuracy"], saved["test_loss"]  # re-scored (test above)
    near_accuracy = accuracy + 1 / 10000 if accuracy < 1 else accuracy - 1 / 10000
    near_loss = loss * (1 + 6e-6)

    def edit(results):
        results.update(test_accuracy=near_accuracy, test_loss=near_loss)

    result = eval_only(edited_copy(tiny_run, tmp_path, "gru_results.json", edit), mnist_dir)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "gru: agrees with gru_results.json to float rounding" in result.stdout
    assert (f"saved test accuracy {100 * near_accuracy:.4f}% (loss {near_loss:.8g}), "
            f"re-scored {100 * accuracy:.4f}% (loss {loss:.8g})") in result.stdout
    assert "DIFFERS" not in result.stdout


@pytest.mark.parametrize("accuracy_shift, loss_factor", [(2 / 10000, 1.0), (0.0, 1 + 3e-5)])
def test_scores_beyond_rounding_differ(tiny_run, mnist_dir, tmp_path, accuracy_shift,
                                       loss_factor):
    saved = json.loads((tiny_run / "gru_results.json").read_text())
    accuracy, loss = saved["test_accuracy"], saved["test_loss"]
    far_accuracy = accuracy + accuracy_shift if accuracy < 0.5 else accuracy - accuracy_shift
    far_loss = loss * loss_factor

    def edit(results):
        results.update(test_accuracy=far_accuracy, test_loss=far_loss)

    result = eval_only(edited_copy(tiny_run, tmp_path, "gru_results.json", edit), mnist_dir)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = next(x for x in result.stdout.splitlines() if "DIFFERS" in x)
    assert line.startswith("gru: DIFFERS from gru_results.json by more than float rounding")
    expected = (f"saved test accuracy {100 * far_accuracy:.4f}% (loss {far_loss:.8g}), "
                f"re-scored {100 * accuracy:.4f}% (loss {loss:.8g})")
    assert line.endswith(expected), line
    # the printed numbers show the difference
    saved_part, rescored_part = expected.split(", re-scored ")
    assert saved_part.removeprefix("saved test accuracy ") != rescored_part


def test_config_that_does_not_fit_the_checkpoint_is_one_line(tiny_run, mnist_dir, tmp_path):
    copy = edited_copy(tiny_run, tmp_path, "config.json", lambda c: c.update(order="pixels"))
    # rows: 28 pixels per step into 8 units; pixels: 1 per step
    assert_one_line_exit_2(eval_only(copy, mnist_dir), f"{copy / 'config.json'}: ",
                           "do not fit the model config.json describes", "order 'pixels'",
                           "test inputs of shape [784, 1]", "saved for [28, 28]")


@pytest.mark.parametrize("key, value", [("test_accuracy", "x"), ("test_loss", None)])
def test_results_file_without_a_number_is_one_line(tiny_run, mnist_dir, tmp_path, key, value):
    copy = edited_copy(tiny_run, tmp_path, "gru_results.json", lambda r: r.update({key: value}))
    assert_one_line_exit_2(eval_only(copy, mnist_dir),
                           f"{copy / 'gru_results.json'} holds {key} = {value!r}, not a number")
