"""The forward-mode TypeError's claims about jax.hessian hold, per implementation.

The message said "reverse mode only ... and jax.hessian" for the Pallas layers too, but
``jax.hessian`` through them fails inside Pallas. Each implementation's message now says
what works; these tests check every claim on a tiny model (Pallas in interpret mode off a
GPU, as in tests/test_pallas.py), against finite differences of the ``"flax"`` model's
reverse-mode gradient (JAX's own autodiff of ``nn.RNN``, not the custom VJPs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseq.nn import ops
from jaxseq.nn.classifier import RecurrentClassifier


def _model(implementation: str, features: int) -> RecurrentClassifier:
    return RecurrentClassifier(cell="rnn", features=features, num_classes=2,
                               implementation=implementation)


def _forward_mode_message(model, params, x) -> str:
    with pytest.raises(TypeError) as info:
        jax.jvp(lambda v: model.apply(params, v), (x,), (x,))
    return str(info.value)


def _fd_hessian(flax_model, params, x, eps=1e-2):
    """Central differences of the flax model's gradient, column by column (float64 sum)."""
    grad = jax.jit(jax.grad(lambda v: flax_model.apply(params, v)[0, 1]))
    flat = np.asarray(x, np.float64).ravel()
    columns = []
    for i in range(flat.size):
        step = np.zeros_like(flat)
        step[i] = eps
        up = np.asarray(grad(jnp.asarray((flat + step).reshape(x.shape), jnp.float32)))
        down = np.asarray(grad(jnp.asarray((flat - step).reshape(x.shape), jnp.float32)))
        columns.append((up.astype(np.float64) - down) / (2 * eps))
    return np.stack([c.ravel() for c in columns], axis=1).reshape(x.shape + x.shape)


def test_fused_message_claims_hessian_and_hessian_works():
    model, flax_model = _model("fused", 3), _model("flax", 3)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 2)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    message = _forward_mode_message(model, params, x)
    assert message == ops.FORWARD_MODE_MESSAGE
    assert "jax.hessian, which is jacfwd of jacrev" in message
    assert "not supported either" not in message
    want = _fd_hessian(flax_model, params, x)
    assert np.abs(want).max() > 1e-3  # a real second derivative
    for m in (model, flax_model):  # "flax" is the remedy: its hessian works too
        hessian = jax.hessian(lambda v, m=m: m.apply(params, v)[0, 1])(x)
        np.testing.assert_allclose(hessian, want, rtol=2e-2, atol=2e-3)
    # ... and the reverse modes the message names.
    fd_grad = np.asarray(jax.grad(lambda v: flax_model.apply(params, v)[0, 1])(x))
    np.testing.assert_allclose(jax.grad(lambda v: model.apply(params, v)[0, 1])(x), fd_grad,
                               rtol=1e-5, atol=1e-6)


def test_pallas_message_says_hessian_is_unsupported_and_it_is():
    model, flax_model = _model("pallas", 16), _model("flax", 16)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 2, 2)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    message = _forward_mode_message(model, params, x)
    assert message == ops.PALLAS_FORWARD_MODE_MESSAGE == ops.forward_mode_message("pallas")
    assert "jax.hessian, which is jacfwd of jacrev, is not supported either" in message
    assert "implementation='flax'" in message and "and jax.hessian" in message
    # Not supported, as the message says (JAX/Pallas' own error, whatever its wording).
    with pytest.raises(Exception):  # noqa: B017, PT011 - Pallas' error type is not ours
        jax.hessian(lambda v: model.apply(params, v)[0, 1])(x)
    # What it says works: reverse mode (jacrev) equals flax's, and flax's hessian runs.
    np.testing.assert_allclose(jax.jacrev(lambda v: model.apply(params, v))(x),
                               jax.jacrev(lambda v: flax_model.apply(params, v))(x),
                               rtol=1e-4, atol=1e-6)
    hessian = jax.hessian(lambda v: flax_model.apply(params, v)[0, 1])(x)
    np.testing.assert_allclose(hessian, _fd_hessian(flax_model, params, x),
                               rtol=2e-2, atol=2e-3)
