"""Seeds trained as one vmapped program (``fit_seeds``, ``RunSession.train_seeds``,
``--seeds-together``): each seed equals its own run to float rounding, is checkpointed in its
own folder, stops and resumes (mid-epoch, at an epoch, either way), and is re-scored.

The expected numbers come from separate ``fit`` runs of each seed, never from the code under
test; on CPU the vmapped sums round in another order, so the comparisons are to 1e-5
relative (a resumed vmapped run against the uninterrupted one is exact).
"""

from __future__ import annotations

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment

from jaxseq.data import Dataset
from jaxseq.nn import RecurrentClassifier
from jaxseq.runs import interrupt
from jaxseq.runs.session import RunSession
from jaxseq.train import (
    Callbacks,
    NonFiniteLossError,
    Objective,
    ResumePoint,
    SeedData,
    TrainingStopped,
    create_train_state,
    evaluate,
    fit,
    fit_seeds,
    seed_state,
    seeds_together,
    stack_states,
)

RTOL = 1e-5
QUIET = Callbacks(log=None)


def _data(n: int = 120, lengths: bool = False) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 5, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int32) + (x[:, :, 1].sum(axis=1) > 0)
    return Dataset(x, y, rng.integers(1, 6, n) if lengths else None)


def _splits(data: Dataset, seeds: int) -> tuple[SeedData, SeedData]:
    """Each seed its own shuffled split of the same examples: 80 to train, 40 to validate."""
    perms = [np.random.default_rng(100 + k).permutation(data.num_examples) for k in range(seeds)]
    return SeedData(data, [p[:80] for p in perms]), SeedData(data, [p[80:] for p in perms])


def _host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


def assert_close(a, b, rtol=RTOL, atol=1e-6):
    for x, y in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b)), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def assert_histories(a, b, exact=False):
    assert set(a) == set(b)
    for key in a:
        if key == "epoch_seconds":
            continue
        if exact:
            assert a[key] == b[key], key
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=RTOL, atol=1e-7, err_msg=key)


def test_fit_seeds_equals_each_seeds_own_fit():
    """Two seeds, each with its own split, initialisation, shuffles and dropout masks, of a
    two-layer RNN with dropout on sequences of several lengths."""
    data = _data(lengths=True)
    train, validation = _splits(data, 2)
    model = RecurrentClassifier(cell="rnn", features=8, num_classes=3, num_layers=2,
                                dropout=0.3)
    keys = [jax.random.key(10 + k) for k in range(2)]

    def fresh(k):
        return create_train_state(model, jax.random.key(k), data.inputs[:1], 1e-2)

    kwargs = dict(epochs=2, batch_size=16, eval_batch_size=16, progress=False)
    states, histories = fit_seeds(stack_states([fresh(k) for k in range(2)]), train,
                                  validation, rngs=keys, callbacks=[QUIET] * 2, **kwargs)
    assert states.step.tolist() == [10, 10]
    for k in range(2):
        state, history = fit(fresh(k), train.seed(k), validation.seed(k), rng=keys[k],
                             callbacks=QUIET, **kwargs)
        assert_histories(histories[k], history)
        assert_close(seed_state(states, k).params, state.params)
        together, alone = (evaluate(s, data) for s in (seed_state(states, k), state))
        assert abs(together["accuracy"] - alone["accuracy"]) * data.num_examples <= 1
        assert together["loss"] == pytest.approx(alone["loss"], rel=RTOL)
    assert histories[0]["val_loss"] != histories[1]["val_loss"]  # the seeds differ


def test_fit_seeds_refuses_what_it_cannot_train_together():
    data = _data()
    train, _ = _splits(data, 2)
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=3)
    states = stack_states([create_train_state(model, jax.random.key(k), data.inputs[:1])
                           for k in range(2)])
    run = dict(rngs=[0, 1], epochs=1, batch_size=16, progress=False)
    with pytest.raises(ValueError, match=r"callbacks must hold one entry per seed \(2\), got 1"):
        fit_seeds(states, train, callbacks=[QUIET], **run)
    with pytest.raises(ValueError, match="continues every seed from the same point"):
        fit_seeds(states, train, resume=[ResumePoint(), ResumePoint(1, {"epoch": [1]})],
                  callbacks=[QUIET] * 2, **{**run, "epochs": 2})
    with pytest.raises(ValueError, match="leading axis of 3 seeds"):
        fit_seeds(states, _splits(data, 3)[0], callbacks=[QUIET] * 3, **{**run, "rngs": [0] * 3})
    with pytest.raises(ValueError, match="different numbers of steps per epoch"):
        fit_seeds(states, SeedData(data, [np.arange(80), np.arange(40)]),
                  callbacks=[QUIET] * 2, **run)
    with pytest.raises(ValueError, match=r"the rows of seed 1 must be 1-D integers in \[0, 120\)"):
        SeedData(data, [np.arange(4), np.array([0, 120])])
    with pytest.raises(ValueError, match="same array shapes"):
        stack_states([create_train_state(model, jax.random.key(0), data.inputs[:1]),
                      create_train_state(RecurrentClassifier(cell="rnn", features=5,
                                                             num_classes=3),
                                         jax.random.key(0), data.inputs[:1])])
    assert seeds_together("auto", "cpu") is False and seeds_together("auto", "gpu") is True
    with pytest.raises(ValueError, match=r"seeds_together must be one of \['auto', 'on', 'off'\]"):
        seeds_together("yes")


def test_a_diverging_seed_is_named_with_its_last_checkpoint(tmp_path):
    """Seed 1's rows hold the class the loss cannot take (NaN): the error names it."""
    data = _data()
    rows = [np.flatnonzero(data.labels < 2)[:32], np.arange(32)]
    nan_for_2 = Objective(lambda p, y: jnp.where(y == 2, jnp.nan, jnp.sum(p ** 2, -1)),
                          lambda p, y: {})
    model = RecurrentClassifier(cell="rnn", features=4, num_classes=3)
    states = [create_train_state(model, jax.random.key(k), data.inputs[:1]) for k in range(2)]
    session = RunSession(tmp_path, progress=False, log=None)
    with pytest.raises(NonFiniteLossError, match=r"^seed 1: non-finite training loss \(NaN or "
                       r"infinity\) at epoch 1, step 1 of 2; training stopped, no checkpoint"):
        session.train_seeds(["seed-0", "seed-1"], model, states, [0, 1],
                            SeedData(data, rows), objective=nan_for_2, epochs=1, batch_size=16,
                            labels=["seed 0", "seed 1"])


def _stopper(after: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] > after

    return should_stop


def test_train_seeds_stops_and_resumes_per_seed_either_way(tmp_path):
    """Reference: two seeds as one program, 2 epochs of 5 steps (one step per chunk).
    Stopped inside epoch 2 and resumed as one program: exact. The same stopped folder resumed
    one seed after another, a run of 1 epoch continued to 2, and a folder written one seed
    after another (seed 0 done, seed 1 stopped mid-epoch) resumed as one program: equal."""
    data = _data()
    train, validation = _splits(data, 2)
    model = RecurrentClassifier(cell="gru", features=8, num_classes=3)
    names, keys = ["seed-0", "seed-1"], [jax.random.key(20), jax.random.key(21)]

    def together(folder, epochs=2, resume=False, should_stop=None):
        states = [create_train_state(model, jax.random.key(k), data.inputs[:1]) for k in (0, 1)]
        session = RunSession(folder, resume=resume, progress=False, log=None,
                             should_stop=should_stop)
        return session.train_seeds(names, model, states, keys, train, validation,
                                   epochs=epochs, batch_size=16)

    def one_by_one(folder, resume=False, stop_seed_1=None):
        out = []
        for k in (0, 1):
            session = RunSession(folder, resume=resume, progress=False, log=None,
                                 should_stop=stop_seed_1 if k == 1 else None)
            state = create_train_state(model, jax.random.key(k), data.inputs[:1])
            out.append(session.train(names[k], model, state, keys[k], train.seed(k),
                                     validation.seed(k), epochs=2, batch_size=16))
        return out

    reference = together(tmp_path / "reference")
    with pytest.raises(TrainingStopped, match="^seed-0, seed-1: training stopped in epoch 2 "
                                              "after step 2 of 5"):
        # asked at each epoch's start and after every step but its last
        together(tmp_path / "cut", should_stop=_stopper(5 + 1 + 1))
    assert interrupt.has_progress(tmp_path / "cut")
    for name in names:
        assert (tmp_path / "cut" / "checkpoints" / name / "interrupted").is_dir()
    shutil.copytree(tmp_path / "cut", tmp_path / "cut-2")
    for (state, history), (expected_state, expected) in zip(
            together(tmp_path / "cut", resume=True), reference, strict=True):
        assert_histories(history, expected, exact=True)
        assert_close(state.params, expected_state.params, rtol=0, atol=0)
    for (state, history), (expected_state, expected) in zip(
            one_by_one(tmp_path / "cut-2", resume=True), reference, strict=True):
        assert_histories(history, expected)
        assert_close(state.params, expected_state.params)

    together(tmp_path / "epoch", epochs=1)
    for (_, history), (_, expected) in zip(together(tmp_path / "epoch", resume=True),
                                           reference, strict=True):
        assert_histories(history, expected, exact=True)

    with pytest.raises(TrainingStopped, match="^seed-1: training stopped in epoch 2 after "
                                              "step 3 of 5"):
        one_by_one(tmp_path / "mixed", stop_seed_1=_stopper(5 + 1 + 2))
    for (state, history), (expected_state, expected) in zip(
            together(tmp_path / "mixed", resume=True), reference, strict=True):
        assert_histories(history, expected)
        assert_close(state.params, expected_state.params)


def test_mnist_seeds_together_equal_one_after_another_and_rescore(mnist_dir, tmp_path):
    """The MNIST task both ways: each seed's results agree to float rounding, in the same
    folders and files; the vmapped run is re-scored by --eval-only's evaluate_run."""
    from jaxseq.tasks.mnist.task import MnistConfig, evaluate_run, run

    small = dict(cell="rnn", hidden_size=8, epochs=1, train_subset=64, batch_size=32, seed=1,
                 seeds=2, data_dir=str(mnist_dir))
    on, off = (run(MnistConfig(**small, seeds_together=mode), tmp_path / mode, progress=False,
                   log=None) for mode in ("on", "off"))
    assert sorted(p.name for p in (tmp_path / "on").iterdir()) == \
        sorted(p.name for p in (tmp_path / "off").iterdir())
    a, b = on["results"]["rnn"], off["results"]["rnn"]
    assert a["seeds"] == b["seeds"] == [1, 2]
    np.testing.assert_allclose(a["test_accuracies"], b["test_accuracies"], atol=1.01e-4)
    for score in evaluate_run(tmp_path / "on"):
        assert score["comparison"] == "equal", score


def test_seeds_together_flag(tmp_path):
    help_text = run_experiment(REPO_ROOT / "experiments" / "adder.py", "--help", timeout=120)
    assert "--seeds-together {auto,on,off}" in help_text.stdout
    bad = run_experiment(REPO_ROOT / "experiments" / "mnist.py", "--seeds-together", "yes",
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "--seeds-together: invalid choice: 'yes'" in bad.stderr
