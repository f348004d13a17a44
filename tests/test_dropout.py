"""Dropout between stacked recurrent layers (jaxseq issue 12.6), PyTorch's ``dropout=``.

Checked against computations that do not use the dropout code: the layers run one by one
(``FusedRNN`` and the Dense head on the classifier's own parameters), the recorded
dropout mask applied by hand, and the model without dropout.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT

from jaxseq.data.dataset import Dataset
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.layers import FusedRNN
from jaxseq.tasks.mnist.task import MnistConfig
from jaxseq.train import (
    CLASSIFICATION,
    Callbacks,
    ResumePoint,
    create_train_state,
    fit,
    train_step,
    uses_dropout,
)

QUIET = Callbacks(log=None)  # fit without its per-epoch line

BATCH, TIME, INPUT, HIDDEN, CLASSES = 64, 6, 3, 8, 4


def data(n=BATCH, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, TIME, INPUT)).astype(np.float32)
    return x, (np.arange(n) % CLASSES).astype(np.int32)


def params_for(model, x):
    return jax.jit(model.init)(jax.random.key(0), x[:1])["params"]


def test_dropout_zero_is_the_model_without_dropout():
    x, y = data()
    model = RecurrentClassifier("gru", HIDDEN, 2, num_classes=CLASSES)  # dropout=0.0
    assert model.dropout == 0.0 and not uses_dropout(model.apply)
    params = params_for(model, x)
    assert not any("dropout" in k for k in params)
    # no dropout module: training mode takes no PRNG and changes nothing, bit for bit
    np.testing.assert_array_equal(model.apply({"params": params}, x, train=True),
                                  model.apply({"params": params}, x))
    # fit calls it with its inputs only: the same as through an apply_fn that takes nothing else
    state = create_train_state(model, jax.random.key(0), x[:1])
    plain = state.replace(apply_fn=lambda variables, inputs: model.apply(variables, inputs))
    a, _ = fit(jax.tree.map(jnp.copy, state), Dataset(x, y), epochs=1, batch_size=16,
               progress=False, callbacks=QUIET)
    b, _ = fit(plain, Dataset(x, y), epochs=1, batch_size=16, progress=False, callbacks=QUIET)
    jax.tree.map(np.testing.assert_array_equal, a.params, b.params)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_eval_mode_equals_no_dropout(bidirectional):
    x, _ = data()
    with_dropout = RecurrentClassifier("lstm", HIDDEN, 3, bidirectional, CLASSES, dropout=0.5)
    without = RecurrentClassifier("lstm", HIDDEN, 3, bidirectional, CLASSES)
    params = params_for(without, x)
    np.testing.assert_array_equal(with_dropout.apply({"params": params}, x),
                                  without.apply({"params": params}, x))


def test_one_layer_dropout_warns_and_does_nothing():
    x, _ = data()
    with pytest.warns(UserWarning, match="num_layers greater than 1.*dropout=0.5"):
        model = RecurrentClassifier("gru", HIDDEN, 1, num_classes=CLASSES, dropout=0.5)
    params = params_for(RecurrentClassifier("gru", HIDDEN, 1, num_classes=CLASSES), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trained_mode = model.apply({"params": params}, x, train=True,
                                   rngs={"dropout": jax.random.key(3)})
    np.testing.assert_array_equal(trained_mode, model.apply({"params": params}, x))


def test_training_mode_drops_between_layers_only():
    """Layer by layer by hand: layer 0, the recorded mask (rate ~p, kept values scaled by
    1/(1-p)), layer 1, the head at the last step; no dropout after the last layer."""
    rate = 0.4
    x, _ = data()
    model = RecurrentClassifier("rnn", HIDDEN, 2, num_classes=CLASSES, dropout=rate)
    params = params_for(model, x)
    logits, state = model.apply({"params": params}, x, train=True,
                                rngs={"dropout": jax.random.key(7)},
                                capture_intermediates=True, mutable=["intermediates"])
    recorded = state["intermediates"]
    assert list(k for k in recorded if k.startswith("dropout")) == ["dropout_0"]
    dropped = np.asarray(recorded["dropout_0"]["__call__"][0])

    layer0 = np.asarray(FusedRNN("rnn", HIDDEN).apply({"params": params["cell_0"]}, x))
    kept = dropped != 0
    assert abs(1 - kept.mean() - rate) < 0.03  # 64 * 6 * 8 values
    np.testing.assert_allclose(dropped[kept], layer0[kept] / (1 - rate), rtol=1e-6)
    layer1 = FusedRNN("rnn", HIDDEN).apply({"params": params["cell_1"]}, jnp.asarray(dropped))
    expected = nn.Dense(CLASSES).apply({"params": params["head"]}, layer1[:, -1])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    # another key, another mask
    other = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(8)})
    assert not np.allclose(other, logits)


def test_train_step_draws_a_mask_per_step():
    x, y = data(16)
    model = RecurrentClassifier("gru", HIDDEN, 2, num_classes=CLASSES, dropout=0.5)
    state = create_train_state(model, jax.random.key(0), x[:1])
    step = jax.jit(train_step, static_argnames="objective")

    with pytest.raises(ValueError, match="needs dropout_rng"):
        train_step(state, x, y, CLASSIFICATION)
    key = jax.random.key(1)
    _, at0 = step(state, x, y, CLASSIFICATION, dropout_rng=key)
    _, at0_again = step(state, x, y, CLASSIFICATION, dropout_rng=key)
    _, at1 = step(state.replace(step=state.step + 1), x, y, CLASSIFICATION, dropout_rng=key)
    assert float(at0["loss"]) == float(at0_again["loss"])
    assert float(at0["loss"]) != float(at1["loss"])
    # by hand: the loss with the mask of fold_in(key, step 0)
    logits = model.apply({"params": state.params}, x, train=True,
                         rngs={"dropout": jax.random.fold_in(key, 0)})
    expected = -jax.nn.log_softmax(logits)[np.arange(16), y].sum()
    np.testing.assert_allclose(float(at0["loss"]), float(expected), rtol=1e-5)


def test_fit_with_dropout_resumes_bit_for_bit():
    x, y = data(32)
    model = RecurrentClassifier("gru", HIDDEN, 2, num_classes=CLASSES, dropout=0.3)
    start = create_train_state(model, jax.random.key(0), x[:1])
    kwargs = dict(batch_size=8, rng=5, progress=False, callbacks=QUIET)
    whole, history = fit(jax.tree.map(jnp.copy, start), Dataset(x, y), epochs=2, **kwargs)
    first, part = fit(jax.tree.map(jnp.copy, start), Dataset(x, y), epochs=1, **kwargs)
    resumed, _ = fit(first, Dataset(x, y), epochs=2, resume=ResumePoint(1, part), **kwargs)
    jax.tree.map(np.testing.assert_array_equal, whole.params, resumed.params)
    no_dropout = create_train_state(RecurrentClassifier("gru", HIDDEN, 2, num_classes=CLASSES),
                                    jax.random.key(0), x[:1])
    plain, _ = fit(no_dropout, Dataset(x, y), epochs=2, **kwargs)
    assert not np.allclose(jax.tree.leaves(plain.params)[0], jax.tree.leaves(whole.params)[0])
    assert np.isfinite(history["train_loss"]).all()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.5", float("nan")])
def test_bad_dropout_is_a_one_line_value_error(bad):
    for make in (lambda: RecurrentClassifier(dropout=bad), lambda: MnistConfig(dropout=bad)):
        with pytest.raises(ValueError, match=r"dropout must be a probability in \[0, 1\)") as e:
            make()
        assert "\n" not in str(e.value)


# --- the MNIST script: --dropout, config.json, --resume -------------------------------------------


def mnist_script():
    spec = importlib.util.spec_from_file_location("mnist_script_dropout",
                                                  REPO_ROOT / "experiments" / "mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(tmp_path, **config):
    """A run folder that --resume accepts: config.json and one 'complete' checkpoint."""
    (tmp_path / "checkpoints" / "lstm" / "1" / "meta").mkdir(parents=True)
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_mnist_dropout_flag_saved_and_read_back(tmp_path, capsys):
    script = mnist_script()
    assert script.parse_args(["--dropout", "0.25", "--num-layers", "2"]).dropout == 0.25
    assert script.parse_args([]).dropout == 0.0
    for bad in ("1", "-0.5", "x"):
        with pytest.raises(SystemExit) as exit_info:
            script.parse_args(["--dropout", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert "--dropout" in err and "[0, 1)" in err and "\n" not in err

    settings = dataclasses.asdict(MnistConfig(num_layers=2, dropout=0.25))
    assert settings["dropout"] == 0.25  # run() writes config.json from asdict(config)
    assert script.parse_args(["--resume", str(fake_run(tmp_path / "new", **settings))]
                             ).dropout == 0.25
    del settings["dropout"]  # a run saved before --dropout existed
    assert script.parse_args(["--resume", str(fake_run(tmp_path / "old", **settings))]
                             ).dropout == 0.0
