"""Mixed precision: ``dtype=jnp.bfloat16`` computes in bfloat16, ``param_dtype`` stores.

For every cell and implementation, uni- and bidirectional, the bfloat16 model agrees with
the float32 one from the same parameters (logits, loss, gradients), its jaxpr shows the
matmuls in bfloat16 and the carries in float32, and logits, parameters and gradients stay
float32. Pallas runs interpreted off a GPU; ``"cudnn"`` runs with JAX's reference of the
binding (as in ``tests/test_cudnn.py``). A short MNIST run in bfloat16 reaches the float32
run's test accuracy.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO_ROOT, run_experiment
from flax import nnx
from jax.experimental import rnn
from test_cudnn import reference_lstm

from jaxseq.data.mnist import load_splits
from jaxseq.nn import cudnn
from jaxseq.nn.adder import BinaryAdder
from jaxseq.nn.cells import make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.layers import recurrent_layer
from jaxseq.nn.nnx import NNXRecurrentClassifier, to_linen
from jaxseq.nn.registry import CELLS
from jaxseq.runs.predictor import load_run
from jaxseq.tasks.adder.config import AdderConfig
from jaxseq.tasks.mnist.config import MnistConfig
from jaxseq.train import create_train_state, evaluate, fit

BATCH, TIME, IN, FEATURES, CLASSES = 4, 28, 3, 16, 5  # CLASSES: a size no other axis has
ON_GPU = jax.default_backend() == "gpu"
CASES = [(cell, implementation) for cell, info in CELLS.items()
         for implementation in info.implementations]
DIRECTIONS = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
X = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH, TIME, IN)), jnp.float32)
LABELS = jnp.arange(BATCH) % CLASSES

# The tolerances. bfloat16 keeps 8 significand bits: each rounding of a matmul operand
# (inputs, weights, the carry read by h @ U) is off by up to 2^-9 relative, and one step's
# error is a few of those. The recurrences are contractive (tanh and sigmoid gates), so the
# errors of earlier steps decay instead of adding up over the 28 steps, and the logits stay
# within a few times 2^-8 of the float32 ones, relative to their largest magnitude (measured:
# 1.5e-3 to 8.5e-3 over these cases). 2^-5 (8 bfloat16 ulps) leaves a factor 3.7 of margin
# and still fails a model whose arithmetic is wrong rather than rounded. From below, a
# difference under 2^-12 of the scale means the model computed in float32 anyway (float32's
# own reassociation differs by ~1e-7). The gradients go through more roundings (the
# backward pass's bfloat16 operands): per leaf 2^-4 of its largest magnitude (measured at
# most 2.5e-2). That the carries stay float32 is checked on the jaxpr, not by the error.
LOGITS_TOL, FLOAT32_FLOOR, GRADS_TOL = 2.0 ** -5, 2.0 ** -12, 2.0 ** -4


@contextlib.contextmanager
def runnable(implementation: str):
    """Where ``implementation`` runs: off a GPU, cuDNN's binding is JAX's reference."""
    with pytest.MonkeyPatch.context() as patch:
        if implementation == "cudnn" and not ON_GPU:
            patch.setattr(cudnn, "check_available", lambda *a: None)
            patch.setattr(rnn, "lstm", reference_lstm)
        yield


def classifier(cell: str, implementation: str, bidirectional: bool, **dtypes):
    return RecurrentClassifier(cell=cell, features=FEATURES, bidirectional=bidirectional,
                               num_classes=CLASSES, implementation=implementation, **dtypes)


def loss_fn(model):
    def loss(params):
        logits = model.apply({"params": params}, X)
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), LABELS]), logits

    return jax.value_and_grad(loss, has_aux=True)


@functools.cache
def params_of(cell: str, implementation: str, bidirectional: bool) -> dict:
    with runnable(implementation):
        model = classifier(cell, implementation, bidirectional)
        return model.lazy_init(jax.random.key(0), X)["params"]  # no forward pass


@functools.cache
def results(cell: str, implementation: str, bidirectional: bool, dtype) -> tuple:
    """``(loss, logits, grads)`` of the float32 parameters with computation ``dtype``."""
    with runnable(implementation):
        model = classifier(cell, implementation, bidirectional, dtype=dtype)
        (loss, logits), grads = jax.jit(loss_fn(model))(
            params_of(cell, implementation, bidirectional))
        return loss, logits, grads


def walk(jaxpr, found: dict) -> dict:
    """The operand dtypes of every ``dot_general`` and the carry dtypes of every ``scan``
    in ``jaxpr`` and its inner jaxprs (scan bodies, custom VJPs, Pallas kernels)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found["dots"].append(eqn)
        if eqn.primitive.name == "scan":
            start = eqn.params["num_consts"]
            found["carries"] += [v.aval.dtype for v in
                                 eqn.invars[start:start + eqn.params["num_carry"]]]
        for value in eqn.params.values():
            for inner in value if isinstance(value, tuple | list) else (value,):
                if hasattr(getattr(inner, "jaxpr", inner), "eqns"):
                    walk(inner, found)
    return found


def max_error(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a, jnp.float32) - jnp.asarray(b, jnp.float32))))


@pytest.mark.parametrize("cell, implementation", CASES)
@DIRECTIONS
def test_bfloat16_agrees_with_float32(cell, implementation, bidirectional):
    loss32, logits32, grads32 = results(cell, implementation, bidirectional, None)
    loss16, logits16, grads16 = results(cell, implementation, bidirectional, jnp.bfloat16)
    assert logits16.dtype == logits32.dtype == loss16.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(logits32)))
    error = max_error(logits16, logits32)
    assert FLOAT32_FLOOR * scale < error <= LOGITS_TOL * scale, (error, scale)
    assert abs(float(loss16) - float(loss32)) <= LOGITS_TOL * abs(float(loss32))
    params = params_of(cell, implementation, bidirectional)
    assert jax.tree.structure(grads16) == jax.tree.structure(params)
    for p, g16, g32 in zip(*map(jax.tree.leaves, (params, grads16, grads32)), strict=True):
        assert p.dtype == g16.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(g16)))
        assert max_error(g16, g32) <= GRADS_TOL * float(jnp.max(jnp.abs(g32)))


@pytest.mark.parametrize("cell, implementation", CASES)
@DIRECTIONS
def test_bfloat16_matmuls_and_float32_carries(cell, implementation, bidirectional):
    """The jaxpr of the loss' gradient: the recurrences' matmuls take bfloat16 operands,
    only the head's (``CLASSES`` wide) take float32 ones; the scans carry float32 (Flax's
    ``nn.SimpleCell`` carries its ``h`` in ``dtype``). cuDNN's binding is float32 only."""
    with runnable(implementation):
        model = classifier(cell, implementation, bidirectional, dtype=jnp.bfloat16)
        found = walk(jax.make_jaxpr(loss_fn(model))(
            params_of(cell, implementation, bidirectional)), {"dots": [], "carries": []})
    operands = [{v.aval.dtype for v in eqn.invars} for eqn in found["dots"]]
    bfloat16, float32 = {jnp.dtype(jnp.bfloat16)}, {jnp.dtype(jnp.float32)}
    head = [CLASSES in (*eqn.invars[0].aval.shape, *eqn.invars[1].aval.shape,
                        *eqn.outvars[0].aval.shape) for eqn in found["dots"]]
    if implementation == "cudnn":
        assert all(o == float32 for o in operands)
    else:
        assert sum(o == bfloat16 for o in operands) >= 2
        assert all(o == bfloat16 for o, h in zip(operands, head, strict=True) if not h)
    assert all(o == float32 for o, h in zip(operands, head, strict=True) if h)
    floats = {d for d in found["carries"] if jnp.issubdtype(d, jnp.floating)}
    if (cell, implementation) != ("rnn", "flax"):
        assert floats <= {jnp.dtype(jnp.float32)}, floats


@pytest.mark.parametrize("cell, implementation", CASES)
@DIRECTIONS
def test_param_dtype_bfloat16_stores_bfloat16(cell, implementation, bidirectional):
    """Shapes and dtypes only (``jax.eval_shape``): parameters and gradients in bfloat16,
    logits in float32; with ``dtype=float32`` the bfloat16 parameters compute in float32."""
    with runnable(implementation):
        model = classifier(cell, implementation, bidirectional, param_dtype=jnp.bfloat16)
        params = jax.eval_shape(model.init, jax.random.key(0), X)["params"]
        assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
        (loss, logits), grads = jax.eval_shape(loss_fn(model), params)
        assert loss.dtype == logits.dtype == jnp.float32
        assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.bfloat16)}
        model32 = classifier(cell, implementation, bidirectional, dtype=jnp.float32,
                             param_dtype=jnp.bfloat16)
        assert jax.eval_shape(loss_fn(model32), params)[0][1].dtype == jnp.float32


@pytest.mark.parametrize("cell", list(CELLS))
def test_param_dtype_bfloat16_trains(cell):
    """Real numbers for each cell's default implementation: finite bfloat16 gradients."""
    model = classifier(cell, None, False, param_dtype=jnp.bfloat16)
    params = jax.jit(model.init)(jax.random.key(0), X)["params"]
    (loss, logits), grads = jax.jit(loss_fn(model))(params)
    assert bool(jnp.isfinite(loss)) and logits.dtype == jnp.float32
    assert all(g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g)))
               for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("cell, implementation", CASES)
@DIRECTIONS
def test_layers_output_in_their_dtype(cell, implementation, bidirectional):
    """``recurrent_layer`` (``FusedRNN``, ``FusedBidirectional``, ``MaskedRNN``,
    ``LinearRNN``): outputs in ``dtype``, parameters in ``param_dtype``."""
    for dtype, param_dtype in ((jnp.bfloat16, jnp.float32), (None, jnp.bfloat16)):
        with runnable(implementation):
            layer = recurrent_layer(cell, FEATURES, implementation=implementation,
                                    bidirectional=bidirectional, dtype=dtype,
                                    param_dtype=param_dtype)
            variables = jax.eval_shape(layer.init, jax.random.key(0), X)
            outputs = jax.eval_shape(layer.apply, variables, X)
        assert outputs.dtype == jnp.bfloat16
        assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(param_dtype)}


@pytest.mark.parametrize("cell", list(CELLS))
def test_cells_take_dtype_and_param_dtype(cell):
    """One step of :func:`make_cell`'s cell: the carry keeps its dtype, float32 but for Flax's
    Elman cell, which computes its carry in ``dtype``; the output is the new ``h`` (the LRU's:
    ``Re(C h)`` in bfloat16 plus ``D u`` in the parameters' dtype)."""
    made = make_cell(cell, FEATURES, dtype=jnp.bfloat16)
    carry = made.initialize_carry(jax.random.key(1), X[:, 0].shape)
    variables = jax.eval_shape(made.init, jax.random.key(0), carry, X[:, 0])
    new_carry, y = jax.eval_shape(made.apply, variables, carry, X[:, 0])
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    carry_dtype = jnp.bfloat16 if cell == "rnn" else jnp.float32
    assert {c.dtype for c in jax.tree.leaves((carry, new_carry))} == {jnp.dtype(carry_dtype)}
    assert y.dtype == carry_dtype
    stored = make_cell(cell, FEATURES, param_dtype=jnp.bfloat16)
    variables = jax.eval_shape(stored.init, jax.random.key(0), carry, X[:, 0])
    assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype(jnp.bfloat16)}


def test_adder_in_bfloat16():
    bits = jnp.asarray(np.random.default_rng(1).integers(0, 2, (8, 12, 2)))
    params = BinaryAdder().init(jax.random.key(0), bits)
    want = BinaryAdder().apply(params, bits)
    got = jax.jit(BinaryAdder(dtype=jnp.bfloat16).apply)(params, bits)
    assert got.dtype == want.dtype == jnp.float32
    assert FLOAT32_FLOOR < max_error(got, want) <= LOGITS_TOL  # probabilities: scale 1
    stored = jax.eval_shape(BinaryAdder(param_dtype=jnp.bfloat16).init, jax.random.key(0), bits)
    assert {p.dtype for p in jax.tree.leaves(stored)} == {jnp.dtype(jnp.bfloat16)}


def test_nnx_model_takes_dtype():
    model = NNXRecurrentClassifier(IN, cell="gru", features=FEATURES, num_classes=CLASSES,
                                   dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    module, params = to_linen(model)
    assert module.dtype == jnp.bfloat16
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    logits = nnx.jit(lambda m, x: m(x))(model, X)
    assert logits.dtype == jnp.float32
    np.testing.assert_array_equal(logits, jax.jit(module.apply)({"params": params}, X))


def test_bfloat16_training_reaches_float32_accuracy(mnist_dir):
    """GRU, 8,000 training images, 2 epochs, seed 0: both runs near 93% test accuracy.
    At this size four seeds gave differences of 0.01 to 0.03 points, well under 0.5."""
    splits = load_splits(mnist_dir, train_subset=8000, download=False)
    accuracy = {}
    for dtype in ("float32", "bfloat16"):
        model = RecurrentClassifier(cell="gru", features=128, dtype=dtype)
        state = create_train_state(model, jax.random.key(0), splits.train.inputs[:1])
        state, _ = fit(state, splits.train, epochs=2, rng=0, progress=False,
                       callbacks=None)
        assert {p.dtype for p in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
        accuracy[dtype] = 100 * evaluate(state, splits.test)["accuracy"]
    assert accuracy["float32"] > 85
    assert abs(accuracy["bfloat16"] - accuracy["float32"]) <= 0.5, accuracy


# The scripts' --dtype: a generated flag (jaxseq.tasks.config.ModelSettings.dtype).

SCRIPTS = ("mnist.py", "adder.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_list_the_dtype_flag(script):
    result = run_experiment(script, "--help", timeout=120)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    assert "--dtype {float32,bfloat16}" in help_text and "(default: float32)" in help_text


@pytest.mark.parametrize("script, value", [("mnist.py", "float16"), ("adder.py", "foo")])
def test_other_dtypes_are_refused_in_one_line(script, value):
    result = run_experiment(script, "--dtype", value, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert (f"argument --dtype: invalid choice: '{value}' (choose from 'float32', "
            f"'bfloat16')") in result.stderr


def test_configs_check_their_dtype():
    assert (MnistConfig().dtype, AdderConfig(dtype="bfloat16").dtype) == ("float32", "bfloat16")
    for config in (MnistConfig, AdderConfig):
        with pytest.raises(ValueError, match=r"^unknown dtype 'float16'; valid dtypes are "
                                             r"\['float32', 'bfloat16'\]$"):
            config(dtype="float16")


def load_mnist_script():
    spec = importlib.util.spec_from_file_location("mnist_script_dtype",
                                                  REPO_ROOT / "experiments" / "mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bfloat16_run_records_its_dtype_and_resumes_with_it(mnist_dir, tmp_path):
    """config.json and the checkpoint's model say bfloat16; ``--resume`` reads it back
    (and refuses ``--dtype``), rebuilds the bfloat16 model and reproduces the test result."""
    out = tmp_path / "run"
    result = run_experiment("mnist.py", "--cell", "gru", "--hidden-size", "16", "--epochs", "1",
                            "--train-subset", "640", "--dtype", "bfloat16", "--data-dir",
                            str(mnist_dir), "--out-dir", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    predictor = load_run(out, "gru")
    assert jnp.dtype(predictor.model.dtype) == jnp.bfloat16
    assert {p.dtype for p in jax.tree.leaves(predictor.params)} == {jnp.dtype(jnp.float32)}
    script = load_mnist_script()
    (out / "summary.json").unlink()
    assert script.parse_args(["--resume", str(out)]).dtype == "bfloat16"
    with pytest.raises(SystemExit):
        script.parse_args(["--resume", str(out), "--dtype", "float32"])
    saved = json.loads((out / "gru_results.json").read_text())["test_accuracy"]
    resumed = run_experiment("mnist.py", "--resume", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "gru_results.json").read_text())["test_accuracy"] == saved


def test_a_config_without_dtype_resumes_in_float32(tmp_path):
    """Run folders written before ``--dtype`` existed (tests/fixtures/run_0_2_0)."""
    old = tmp_path / "old"
    shutil.copytree(REPO_ROOT / "tests" / "fixtures" / "run_0_2_0" / "mnist", old)
    (old / "summary.json").unlink()
    assert "dtype" not in (old / "config.json").read_text()
    assert load_mnist_script().parse_args(["--resume", str(old)]).dtype == "float32"
