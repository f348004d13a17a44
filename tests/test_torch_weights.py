"""PyTorch weights -> RecurrentClassifier and back: same outputs as PyTorch, every step.

The reference is PyTorch itself (``torch.nn.RNN``/``LSTM``/``GRU`` and ``Linear``, run in
float32 on the CPU): the converted JAX model must reproduce its logits and its recurrent
``output`` at every time step to 1e-5, for both implementations of the classifier.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn.cells import make_cell
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.layers import FusedBidirectional, FusedCellParams, FusedRNN
from jaxseq.nn.torch_weights import TORCH_CELLS, params_from_torch, params_to_torch

IMPLEMENTATIONS = ("fused", "flax")  # the pure-JAX ones; pallas: tests/test_pallas.py

torch = pytest.importorskip("torch")

BATCH, TIME, INPUT, HIDDEN, CLASSES = 3, 6, 5, 7, 4
TOL = {"rtol": 1e-5, "atol": 1e-5}


class StudyModel(torch.nn.Module):
    """The reference study's model: a recurrent layer named after its cell, then ``fc``
    on the output of the last step. ``forward`` also returns the recurrent ``output``,
    ``[batch, time, D * hidden]`` whatever ``batch_first`` is."""

    def __init__(self, cell: str, input_size: int = INPUT, hidden: int = HIDDEN,
                 num_classes: int = CLASSES, num_layers: int = 1,
                 bidirectional: bool = False, batch_first: bool = True, **kwargs):
        super().__init__()
        layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
        self.cell, self.batch_first = cell, batch_first
        setattr(self, cell, layer(input_size, hidden, num_layers=num_layers,
                                  bidirectional=bidirectional, batch_first=batch_first,
                                  **kwargs))
        self.fc = torch.nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, x):  # x [batch, time, features] if batch_first else [time, batch, ...]
        out, _ = getattr(self, self.cell)(x)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return self.fc(out[:, -1, :]), out


def torch_run(model: StudyModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's logits and recurrent outputs for ``x [batch, time, features]``."""
    inputs = torch.from_numpy(x)
    if not model.batch_first:
        inputs = inputs.transpose(0, 1).contiguous()
    with torch.no_grad():
        logits, out = model(inputs)
    return logits.numpy(), out.numpy()


def layer_outputs(implementation: str, cell: str, params: dict, x: jax.Array,
                  num_layers: int, bidirectional: bool) -> jax.Array:
    """The last layer's outputs at every step, ``[batch, time, D * hidden]``, running the
    converted layer parameters through the classifier's own layer types."""
    outputs = x
    for layer in range(num_layers):
        forward, backward = params[f"cell_{layer}"], params.get(f"cell_{layer}_backward")
        if implementation == "fused" and bidirectional:
            both = FusedBidirectional(FusedCellParams(cell, HIDDEN), FusedCellParams(cell, HIDDEN))
            outputs = both.apply({"params": {"forward_cell": forward, "backward_cell": backward}},
                                 outputs)
        elif implementation == "fused":
            outputs = FusedRNN(cell, HIDDEN).apply({"params": forward}, outputs)
        elif bidirectional:
            bi = nn.Bidirectional(nn.RNN(make_cell(cell, HIDDEN)), nn.RNN(make_cell(cell, HIDDEN)))
            outputs = bi.apply({"params": {"forward_rnn": {"cell": forward},
                                           "backward_rnn": {"cell": backward}}}, outputs)
        else:
            outputs = nn.RNN(make_cell(cell, HIDDEN)).apply({"params": {"cell": forward}},
                                                            outputs)
    return outputs


def classifier(cell: str, num_layers: int, bidirectional: bool, implementation: str,
               num_classes: int = CLASSES, features: int = HIDDEN) -> RecurrentClassifier:
    return RecurrentClassifier(cell=cell, features=features, num_layers=num_layers,
                               bidirectional=bidirectional, num_classes=num_classes,
                               implementation=implementation)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_converted_model_matches_pytorch_every_step(cell, bidirectional, num_layers,
                                                     batch_first):
    torch.manual_seed(TORCH_CELLS.index(cell) * 8 + bidirectional * 4 + num_layers * 2
                      + batch_first)
    model = StudyModel(cell, num_layers=num_layers, bidirectional=bidirectional,
                       batch_first=batch_first)
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, INPUT)).astype(np.float32)
    want_logits, want_out = torch_run(model, x)
    assert want_out.shape == (BATCH, TIME, HIDDEN * (2 if bidirectional else 1))

    params = params_from_torch(model.state_dict(), cell=cell, num_layers=num_layers,
                               bidirectional=bidirectional)
    with jax.default_matmul_precision("highest"):
        for implementation in IMPLEMENTATIONS:
            clf = classifier(cell, num_layers, bidirectional, implementation)
            # The tree has exactly the classifier's parameter names and shapes.
            init = jax.eval_shape(clf.init, jax.random.key(0), jnp.asarray(x))["params"]
            assert jax.tree.map(np.shape, init) == jax.tree.map(np.shape, params)
            logits = clf.apply({"params": params}, jnp.asarray(x))
            np.testing.assert_allclose(np.asarray(logits), want_logits, **TOL,
                                       err_msg=f"logits, {implementation}")
            out = layer_outputs(implementation, cell, params, jnp.asarray(x), num_layers,
                                bidirectional)
            np.testing.assert_allclose(np.asarray(out), want_out, **TOL,
                                       err_msg=f"outputs, {implementation}")


def random_params(cell: str, num_layers: int, bidirectional: bool, seed: int) -> dict:
    """A classifier's parameter tree with every leaf random (biases included)."""
    init = classifier(cell, num_layers, bidirectional, "fused").init(
        jax.random.key(seed), jnp.zeros((1, TIME, INPUT)))["params"]
    leaves, treedef = jax.tree.flatten(init)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        treedef, [rng.normal(0, 0.5, np.shape(leaf)).astype(np.float32) for leaf in leaves])


@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("cell", TORCH_CELLS)
def test_round_trips(cell, num_layers, bidirectional):
    # params -> torch -> params is the identity, bit for bit.
    params = random_params(cell, num_layers, bidirectional, seed=1)
    state = params_to_torch(params, cell=cell, num_layers=num_layers,
                            bidirectional=bidirectional)
    back = params_from_torch(state, cell=cell, num_layers=num_layers,
                             bidirectional=bidirectional)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)

    # The converted state loads strictly into a PyTorch module of the same shape: the
    # key names, order and shapes are PyTorch's own.
    torch.manual_seed(2)
    model = StudyModel(cell, num_layers=num_layers, bidirectional=bidirectional)
    assert list(state) == list(model.state_dict())
    for key, value in model.state_dict().items():
        assert state[key].shape == tuple(value.shape), key

    # torch -> params -> torch gives a module that computes the same outputs (the bias
    # split differs: the combined bias in bias_ih, zeros in bias_hh), for every step.
    x = np.random.default_rng(3).normal(size=(BATCH, TIME, INPUT)).astype(np.float32)
    want_logits, want_out = torch_run(model, x)
    again = params_to_torch(params_from_torch(model.state_dict(), cell=cell,
                                              num_layers=num_layers,
                                              bidirectional=bidirectional),
                            cell=cell, num_layers=num_layers, bidirectional=bidirectional)
    torch.manual_seed(4)
    copy = StudyModel(cell, num_layers=num_layers, bidirectional=bidirectional)
    copy.load_state_dict({k: torch.from_numpy(v) for k, v in again.items()})
    logits, out = torch_run(copy, x)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out, want_out, rtol=1e-6, atol=1e-6)
    original = {k: v.numpy() for k, v in model.state_dict().items()}
    for key in again:
        if "weight" in key:
            np.testing.assert_array_equal(again[key], original[key], err_msg=key)
    hidden_bias = again[f"{cell}.bias_hh_l0"]
    if cell == "gru":  # only b_hn survives in bias_hh, at its own place
        np.testing.assert_array_equal(hidden_bias[2 * HIDDEN:],
                                      original[f"{cell}.bias_hh_l0"][2 * HIDDEN:])
        hidden_bias = hidden_bias[:2 * HIDDEN]
    np.testing.assert_array_equal(hidden_bias, 0.0)


def test_bare_layer_state_dict_and_own_prefixes():
    # A bare nn.GRU's state_dict (rnn_prefix=""), no head; and a model with other names.
    torch.manual_seed(5)
    gru = torch.nn.GRU(INPUT, HIDDEN, num_layers=2, batch_first=True)
    params = params_from_torch(gru.state_dict(), cell="gru", num_layers=2, rnn_prefix="",
                               head_prefix=None)
    assert sorted(params) == ["cell_0", "cell_1"]
    x = np.random.default_rng(6).normal(size=(BATCH, TIME, INPUT)).astype(np.float32)
    with torch.no_grad():
        want = gru(torch.from_numpy(x))[0].numpy()
    with jax.default_matmul_precision("highest"):
        got = layer_outputs("fused", "gru", params, jnp.asarray(x), 2, False)
    np.testing.assert_allclose(np.asarray(got), want, **TOL)
    state = params_to_torch(params, cell="gru", num_layers=2, rnn_prefix="", head_prefix=None)
    assert list(state) == list(gru.state_dict())

    model = StudyModel("lstm")
    renamed = {k.replace("lstm.", "encoder.").replace("fc.", "out."): v
               for k, v in model.state_dict().items()}
    a = params_from_torch(renamed, cell="lstm", rnn_prefix="encoder", head_prefix="out")
    b = params_from_torch(model, cell="lstm")  # the module itself: its settings are checked
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(u, v)
    assert set(params_to_torch(a, cell="lstm", rnn_prefix="encoder",
                               head_prefix="out")) == set(renamed)
    # A whole variables dict is accepted by params_to_torch.
    assert set(params_to_torch({"params": b}, cell="lstm")) == set(model.state_dict())


def one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(ValueError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_state_dicts_name_the_key():
    torch.manual_seed(7)
    model = StudyModel("lstm", num_layers=2, bidirectional=True)
    state = dict(model.state_dict())
    spec = {"cell": "lstm", "num_layers": 2, "bidirectional": True}

    # Wrong shapes: the key, found and expected shapes.
    bad = dict(state, **{"lstm.weight_hh_l1_reverse": torch.zeros(4 * HIDDEN, HIDDEN + 1)})
    message = one_line_error("'lstm.weight_hh_l1_reverse' has shape", params_from_torch,
                             bad, **spec)
    assert f"({4 * HIDDEN}, {HIDDEN + 1})" in message
    assert f"expected ({4 * HIDDEN}, {HIDDEN})" in message
    bad = dict(state, **{"lstm.weight_ih_l1": torch.zeros(4 * HIDDEN, HIDDEN)})  # not 2H
    message = one_line_error("'lstm.weight_ih_l1' has shape", params_from_torch, bad, **spec)
    assert f"expected ({4 * HIDDEN}, {2 * HIDDEN})" in message
    bad = dict(state, **{"lstm.weight_hh_l0": torch.zeros(3 * HIDDEN, HIDDEN)})  # a GRU's
    one_line_error(rf"'lstm.weight_hh_l0' has shape \({3 * HIDDEN}, {HIDDEN}\), expected "
                   rf"\({4 * HIDDEN}, {HIDDEN}\)", params_from_torch, bad, **spec)
    bad = dict(state, **{"fc.weight": torch.zeros(CLASSES, HIDDEN)})  # a one-way head
    one_line_error(rf"'fc.weight' has shape \({CLASSES}, {HIDDEN}\), expected "
                   rf"\(\?, {2 * HIDDEN}\)", params_from_torch, bad, **spec)
    bad = dict(state, **{"lstm.weight_ih_l0_reverse": torch.zeros(4 * HIDDEN, INPUT + 1)})
    one_line_error(rf"'lstm.weight_ih_l0_reverse' has shape \({4 * HIDDEN}, {INPUT + 1}\), "
                   rf"expected \({4 * HIDDEN}, {INPUT}\)", params_from_torch, bad, **spec)
    bad = dict(state, **{"fc.bias": torch.zeros(CLASSES + 1)})
    one_line_error(rf"'fc.bias' has shape \({CLASSES + 1},\), expected \({CLASSES},\)",
                   params_from_torch, bad, **spec)

    # The wrong cell for these weights: LSTM weights read as a GRU.
    one_line_error("'lstm.weight_hh_l0' has shape", params_from_torch, state,
                   **dict(spec, cell="gru"), rnn_prefix="lstm")
    # Missing and unexpected keys.
    bad = {k: v for k, v in state.items() if k != "lstm.weight_ih_l1"}
    one_line_error("missing key 'lstm.weight_ih_l1'", params_from_torch, bad, **spec)
    one_line_error("unexpected key 'lstm.bias_hh_l0_reverse'", params_from_torch, state,
                   **dict(spec, bidirectional=False, num_layers=2))
    one_line_error("missing key 'lstm.weight_ih_l2'", params_from_torch, state,
                   **dict(spec, num_layers=3))
    one_line_error("unexpected key 'lstm.bias_hh_l1'", params_from_torch, state,
                   **dict(spec, num_layers=1))
    one_line_error("unexpected key 'fc.bias'", params_from_torch, state, **spec,
                   head_prefix=None)
    one_line_error("unexpected key 'embed.weight'", params_from_torch,
                   dict(state, **{"embed.weight": torch.zeros(3, 3)}), **spec)
    message = one_line_error("missing key 'rnn.weight_hh_l0'", params_from_torch, state,
                             **spec, rnn_prefix="rnn")
    assert "lstm.weight_ih_l0" in message  # the keys it does have, as a hint


def test_unsupported_modules_are_refused():
    torch.manual_seed(8)
    one_line_error("unknown cell 'transformer'", params_from_torch, {}, cell="transformer")
    one_line_error("nonlinearity='relu' is not supported", params_from_torch,
                   StudyModel("rnn").state_dict(), cell="rnn", nonlinearity="relu")
    one_line_error("nonlinearity='relu'", params_from_torch,
                   StudyModel("rnn", nonlinearity="relu"), cell="rnn")
    one_line_error("num_layers must be a positive integer", params_from_torch, {},
                   cell="gru", num_layers=0)

    projected = StudyModel("lstm", proj_size=3)
    projected.fc = torch.nn.Linear(3, CLASSES)
    one_line_error("'lstm.weight_hr_l0' is an LSTM projection", params_from_torch,
                   projected.state_dict(), cell="lstm")
    one_line_error("proj_size=3", params_from_torch, projected, cell="lstm")

    no_bias = StudyModel("gru", bias=False)
    one_line_error("missing key 'gru.bias_ih_l0'.*bias=False", params_from_torch,
                   no_bias.state_dict(), cell="gru")
    one_line_error("bias=False", params_from_torch, no_bias, cell="gru")

    # A module whose settings differ from the request.
    one_line_error("but cell='gru'", params_from_torch, StudyModel("lstm"), cell="gru",
                   rnn_prefix="lstm")
    one_line_error("num_layers=1, but num_layers=2", params_from_torch, StudyModel("gru"),
                   cell="gru", num_layers=2)


def test_bad_params_name_the_entry():
    params = random_params("gru", 2, True, seed=9)
    spec = {"cell": "gru", "num_layers": 2, "bidirectional": True}
    bad = jax.tree.map(lambda x: x, params)
    bad["cell_1_backward"]["hn"]["bias"] = np.zeros(HIDDEN + 2, np.float32)
    one_line_error(rf"params 'cell_1_backward/hn/bias' has shape \({HIDDEN + 2},\), "
                   rf"expected \({HIDDEN},\)", params_to_torch, bad, **spec)
    bad = jax.tree.map(lambda x: x, params)
    bad["cell_0"]["iz"]["kernel"] = np.zeros((INPUT + 1, HIDDEN), np.float32)
    one_line_error(rf"params 'cell_0/iz/kernel' has shape \({INPUT + 1}, {HIDDEN}\), "
                   rf"expected \({INPUT}, {HIDDEN}\)", params_to_torch, bad, **spec)
    one_line_error("params has no 'cell_1_backward'", params_to_torch,
                   {k: v for k, v in params.items() if k != "cell_1_backward"}, **spec)
    one_line_error("unexpected entry 'cell_0_backward'", params_to_torch, params,
                   **dict(spec, bidirectional=False))
    one_line_error("unexpected entry 'head'", params_to_torch, params, **spec,
                   head_prefix=None)
    bad = jax.tree.map(lambda x: x, params)
    bad["cell_0"]["hr"]["bias"] = np.zeros(HIDDEN, np.float32)  # Flax's hr has no bias
    one_line_error("unexpected entry 'cell_0/hr/bias'", params_to_torch, bad, **spec)
    one_line_error("params has no 'cell_0/h'", params_to_torch, params,
                   **dict(spec, cell="rnn"))  # a GRU's tree read as an RNN's
    one_line_error("unknown cell", params_to_torch, params, **dict(spec, cell="lstmp"))


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Which of the first three features has the largest sum over time (3 classes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 4)).astype(np.float32)
    return x, x[..., :3].sum(axis=1).argmax(axis=1)


@pytest.mark.parametrize("cell,bidirectional", [("rnn", False), ("lstm", False),
                                                ("gru", False), ("lstm", True)])
def test_trained_pytorch_model_predicts_the_same_classes(cell, bidirectional):
    """A trained PyTorch model of the study's form, converted, gives the same test
    predictions (and hence the same test accuracy) with either implementation."""
    torch.manual_seed(10)
    model = StudyModel(cell, input_size=4, hidden=16, num_classes=3,
                       bidirectional=bidirectional)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x_train, y_train = synthetic(512, seed=11)
    x_test, y_test = synthetic(256, seed=12)
    for step in range(60):
        batch = slice(step % 16 * 32, step % 16 * 32 + 32)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(torch.from_numpy(x_train[batch]))[0], torch.from_numpy(y_train[batch]))
        loss.backward()
        optimizer.step()
    model.eval()
    want_logits, _ = torch_run(model, x_test)
    want = want_logits.argmax(axis=1)
    torch_accuracy = float((want == y_test).mean())
    assert torch_accuracy > 0.6  # it did learn (chance: 1/3)

    params = params_from_torch(model, cell=cell, bidirectional=bidirectional)
    with jax.default_matmul_precision("highest"):
        for implementation in IMPLEMENTATIONS:
            clf = classifier(cell, 1, bidirectional, implementation, num_classes=3,
                             features=16)
            logits = np.asarray(clf.apply({"params": params}, jnp.asarray(x_test)))
            np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
            np.testing.assert_array_equal(logits.argmax(axis=1), want)
            assert float((logits.argmax(axis=1) == y_test).mean()) == torch_accuracy


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_a_state_dict_of_another_float_dtype_converts_with_its_values(dtype):
    """torch's bfloat16 tensors have no NumPy view (a TypeError from torch before): every
    value arrives exactly, in the same dtype."""
    import ml_dtypes

    torch.manual_seed(3)
    gru = torch.nn.GRU(INPUT, HIDDEN, batch_first=True).to(getattr(torch, dtype))
    params = params_from_torch(gru.state_dict(), cell="gru", rnn_prefix="", head_prefix=None)
    numpy_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    back = params_to_torch(params, cell="gru", rnn_prefix="", head_prefix=None)
    for key, tensor in gru.state_dict().items():
        got = np.asarray(back[key])
        assert got.dtype == numpy_dtype, key
        if key.startswith("weight"):  # biases come back re-split (b_ih + b_hh are summed)
            want = tensor.double().numpy()  # every one of the three widens exactly
            np.testing.assert_array_equal(got.astype(np.float64), want)
