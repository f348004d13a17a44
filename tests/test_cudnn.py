"""implementation="cudnn": the LSTM through jax.experimental.rnn, from Flax's parameter tree.

On a CPU the binding cannot run, so its conversion is checked against PyTorch's layout
(jaxseq.nn.torch_weights) and JAX's own unpacking, and the layers run with the binding
replaced by JAX's reference of it (``rnn.lstm_ref``, same weight vector, same
``seq_lengths`` semantics). On a GPU the real binding is compared with the fused layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from jaxseq.nn import cudnn
from jaxseq.nn.classifier import RecurrentClassifier
from jaxseq.nn.torch_weights import params_to_torch

ON_GPU = jax.default_backend() == "gpu"
BATCH, TIME, INPUT, HIDDEN = 5, 7, 3, 16


def random_params(bidirectional: bool, num_layers: int = 2, seed: int = 0) -> dict:
    model = RecurrentClassifier("lstm", HIDDEN, num_layers, bidirectional, 4)
    params = model.init(jax.random.key(0), jnp.zeros((1, TIME, INPUT)))["params"]
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.5, p.shape), jnp.float32), params)


def directions(params: dict, layer: int, bidirectional: bool) -> list:
    names = [f"cell_{layer}", f"cell_{layer}_backward"][:1 + bidirectional]
    return [(tuple(params[n][f"i{g}"]["kernel"] for g in "ifgo"),
             tuple(params[n][f"h{g}"]["kernel"] for g in "ifgo"),
             tuple(params[n][f"h{g}"]["bias"] for g in "ifgo")) for n in names]


@pytest.mark.skipif(ON_GPU, reason="the refusal is for other backends")
def test_off_a_gpu_construction_is_a_one_line_error():
    with pytest.raises(ValueError) as error:
        RecurrentClassifier(cell="lstm", implementation="cudnn")
    message = str(error.value)
    assert "\n" not in message and "needs a GPU" in message
    assert message.endswith("implementations that run there: fused, flax, pallas")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_weights_are_pytorchs_in_cudnn_order(bidirectional):
    """The vector equals PyTorch's W_ih, W_hh of each direction, then b_ih, b_hh of each
    (torch_weights' mapping), and JAX's own unpacking gives those arrays back."""
    params = random_params(bidirectional, num_layers=1)
    packed = np.asarray(cudnn.pack_weights(directions(params, 0, bidirectional)))
    state = params_to_torch({k: v for k, v in params.items() if k != "head"}, cell="lstm",
                            bidirectional=bidirectional, head_prefix=None, rnn_prefix="")
    suffixes = ["_l0", "_l0_reverse"][:1 + bidirectional]
    want = np.concatenate([state[f"{kind}{s}"].ravel() for s in suffixes
                           for kind in ("weight_ih", "weight_hh")]
                          + [state[f"{kind}{s}"] for s in suffixes
                             for kind in ("bias_ih", "bias_hh")])
    np.testing.assert_array_equal(packed, want)
    assert packed.size == rnn.get_num_params_in_lstm(INPUT, HIDDEN, 1, bidirectional)
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(jnp.asarray(packed), INPUT, HIDDEN, 1,
                                                     bidirectional)
    for d, suffix in enumerate(suffixes):
        for got, kind in ((w_ih, "weight_ih"), (w_hh, "weight_hh"), (b_ih, "bias_ih"),
                          (b_hh, "bias_hh")):
            np.testing.assert_array_equal(got[d], state[f"{kind}{suffix}"])


def reference_lstm(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size,
                   num_layers, dropout, bidirectional, precision=None):
    """``rnn.lstm`` by JAX's pure-JAX reference of the cuDNN call (runs on a CPU)."""
    unpacked = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                       bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                        num_layers, dropout, bidirectional)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_classifier_through_the_binding_matches_fused(bidirectional, with_lengths,
                                                      monkeypatch):
    """Two layers: logits and gradients of the one parameter tree, padded rows too."""
    if not ON_GPU:
        monkeypatch.setattr(cudnn, "check_available", lambda *a: None)
        monkeypatch.setattr(rnn, "lstm", reference_lstm)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(BATCH, TIME, INPUT)), jnp.float32)
    lengths = jnp.array([7, 1, 4, 6, 3]) if with_lengths else None
    params = random_params(bidirectional)

    def run(implementation):
        model = RecurrentClassifier("lstm", HIDDEN, 2, bidirectional, 4, implementation)

        def loss(p):
            return jnp.sum(jnp.sin(model.apply({"params": p}, x, lengths)))

        with jax.default_matmul_precision("highest"):
            return jax.jit(model.apply)({"params": params}, x, lengths), jax.jit(
                jax.grad(loss))(params)

    got, want = run("cudnn"), run("fused")
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
