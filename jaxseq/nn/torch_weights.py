"""PyTorch weights in and out: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` + ``nn.Linear`` <-> Flax.

Converts the ``state_dict`` of a PyTorch sequence classifier built like the reference
study's model (a recurrent sub-module, then a ``Linear`` head on the output of the last
time step)::

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(28, 128, batch_first=True)   # or self.rnn / self.gru
            self.fc = torch.nn.Linear(128, 10)

        def forward(self, x):
            out, _ = self.lstm(x)
            return self.fc(out[:, -1, :])

into the parameter tree of :class:`jaxseq.nn.classifier.RecurrentClassifier` (either
``implementation``: both read the same tree), and back::

    params = params_from_torch(model.state_dict(), cell="lstm")
    features = params["cell_0"]["hi"]["kernel"].shape[0]            # 128
    num_classes = params["head"]["kernel"].shape[1]                 # 10
    clf = RecurrentClassifier(cell="lstm", features=features, num_classes=num_classes)
    logits = clf.apply({"params": params}, x)                       # x [batch, time, 28]

    state = params_to_torch(params, cell="lstm")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})

PyTorch's ``batch_first`` does not change the weights: the JAX model always takes
``[batch, time, features]``, so a ``batch_first=False`` model's ``[time, batch, features]``
inputs are transposed before the call. The layouts agree: PyTorch's bidirectional
``output [..., 2 * hidden]`` is the forward direction's output joined with the backward
direction's (in input order), as ``nn.Bidirectional`` and
:func:`jaxseq.nn.fused.fused_bidirectional` concatenate them, so layer ``k > 0``'s
``weight_ih`` columns and the head's ``weight`` columns read the same features, and
``fc(out[:, -1, :])`` is the classifier's head on ``outputs[:, -1]``.

The mapping, per layer ``k`` and direction (PyTorch's ``weight_ih_l{k}``,
``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``, with ``_reverse`` for the backward
direction; Flax's ``cell_{k}`` and ``cell_{k}_backward``). PyTorch stacks the gates' rows
(``W_ih [gates * H, in]``, ``W_hh [gates * H, H]``, biases ``[gates * H]``, ``H`` hidden
units); each Flax kernel is the transpose of one gate's block, ``[in, H]``::

    rnn   (one gate)     i/kernel = W_ih.T         h/kernel = W_hh.T
                         i/bias   = b_ih + b_hh
    lstm  (gates i,f,g,o; q each of them)
                         iq/kernel = W_iq.T        hq/kernel = W_hq.T
                                                   hq/bias   = b_iq + b_hq
    gru   (gates r,z,n)  ir/kernel = W_ir.T        hr/kernel = W_hr.T
                         ir/bias   = b_ir + b_hr
                         iz/kernel = W_iz.T        hz/kernel = W_hz.T
                         iz/bias   = b_iz + b_hz
                         in/kernel = W_in.T        hn/kernel = W_hn.T
                         in/bias   = b_in          hn/bias   = b_hn
    head  fc.weight [C, D * H], fc.bias [C]  ->  head/kernel = weight.T, head/bias = bias

(``D = 2`` directions when bidirectional, else 1; ``in`` is the input size for layer 0
and ``D * H`` for later layers.) Flax's ``nn.SimpleCell`` and ``nn.OptimizedLSTMCell`` keep one
bias per gate where PyTorch keeps two that are always summed, so the sum is exact. The
GRU's ``n`` gate is the exception: PyTorch's ``b_hn`` sits inside the reset product
``r * (W_hn h + b_hn)``, exactly where Flax's ``hn/bias`` sits (``nn.GRUCell`` is the
PyTorch/cuDNN formulation), so it is copied, not summed.

Going back (:func:`params_to_torch`) PyTorch's two biases cannot be told apart: the
combined bias goes into ``bias_ih`` and ``bias_hh`` is zeros (for the GRU: ``bias_ih``
holds ``ir/bias, iz/bias, in/bias`` and ``bias_hh`` is ``[0, 0, hn/bias]``). The
resulting module computes the same function; torch -> params -> torch gives the same
outputs but not the same bias split.

Sources: PyTorch's ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` documentation (equations and
the ``weight_ih_l[k]`` layout, ``_reverse`` suffix for the backward direction); Flax's
``flax/linen/recurrent.py`` (``SimpleCell``, ``OptimizedLSTMCell``, ``GRUCell``).

This module does not import PyTorch: it takes NumPy arrays, or anything with
``.detach().cpu().numpy()`` (torch tensors), and returns NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

# Per cell: the gates in PyTorch's row order (also Flax's parameter name suffixes).
_GATES: dict[str, tuple[str, ...]] = {"rnn": ("",), "lstm": ("i", "f", "g", "o"),
                                      "gru": ("r", "z", "n")}
# Per cell: the ``mode`` attribute of the matching PyTorch module.
_TORCH_MODES = {"rnn": "RNN_TANH", "lstm": "LSTM", "gru": "GRU"}
#: The cells this module converts (names of :data:`jaxseq.nn.registry.CELLS`).
TORCH_CELLS = tuple(_GATES)

_TORCH_SUFFIXES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _numpy(value: Any) -> np.ndarray:
    """A NumPy copy of an array or a torch tensor (``.detach().cpu().numpy()``); a
    bfloat16 tensor, which NumPy cannot take from torch, keeps its dtype (ml_dtypes')."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            import ml_dtypes  # JAX's own dependency
            import torch

            return value.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
        value = value.numpy()
    return np.array(value, copy=True)


def _check_common(cell: str, num_layers: int, bidirectional: bool) -> None:
    if cell not in _GATES:
        raise ValueError(f"unknown cell {cell!r}; valid cells: {', '.join(TORCH_CELLS)}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    if not isinstance(bidirectional, bool):
        raise ValueError(f"bidirectional must be True or False, got {bidirectional!r}")


def _directions(num_layers: int, bidirectional: bool) -> list[tuple[int, str, str]]:
    """``(layer, PyTorch key suffix, Flax name)`` for every layer and direction."""
    out = []
    for layer in range(num_layers):
        out.append((layer, f"_l{layer}", f"cell_{layer}"))
        if bidirectional:
            out.append((layer, f"_l{layer}_reverse", f"cell_{layer}_backward"))
    return out


def _check_module(module: Any, cell: str, num_layers: int, bidirectional: bool,
                  rnn_prefix: str) -> None:
    """Refuse a PyTorch recurrent module whose settings the state_dict does not show."""
    try:
        rnn = module.get_submodule(rnn_prefix) if rnn_prefix else module
    except AttributeError as error:
        raise ValueError(f"the module has no sub-module {rnn_prefix!r} (rnn_prefix); "
                         f"pass rnn_prefix= the recurrent sub-module's name") from error
    mode = getattr(rnn, "mode", None)
    if mode is None:
        raise ValueError(f"sub-module {rnn_prefix!r} is {type(rnn).__name__}, not a PyTorch "
                         f"nn.RNN, nn.LSTM or nn.GRU")
    if mode == "RNN_RELU":
        raise ValueError(f"{rnn_prefix or 'the module'} is an nn.RNN with "
                         f"nonlinearity='relu'; only 'tanh' is supported (nn.SimpleCell)")
    if mode != _TORCH_MODES[cell]:
        raise ValueError(f"{rnn_prefix or 'the module'} is {type(rnn).__name__} "
                         f"(mode {mode}), but cell={cell!r} was requested")
    for name, wanted in (("num_layers", num_layers), ("bidirectional", bidirectional)):
        if getattr(rnn, name, wanted) != wanted:
            raise ValueError(f"{rnn_prefix or 'the module'} has {name}="
                             f"{getattr(rnn, name)!r}, but {name}={wanted!r} was requested")
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"{rnn_prefix or 'the module'} is an LSTM with proj_size="
                         f"{rnn.proj_size}; only proj_size=0 is supported (Flax's LSTM "
                         f"cells have no projection)")
    if not getattr(rnn, "bias", True):
        raise ValueError(f"{rnn_prefix or 'the module'} was built with bias=False; only "
                         f"bias=True is supported (Flax's cells always have biases)")


def _check_shape(what: str, found: tuple[int, ...], expected: tuple[int | None, ...],
                 cell: str) -> None:
    """One-line ValueError unless ``found`` fits ``expected`` (``None``: any size)."""
    if len(found) != len(expected) or any(
            e is not None and e != f for e, f in zip(expected, found, strict=False)):
        shown = "(" + ", ".join("?" if e is None else str(e) for e in expected) + (
            ",)" if len(expected) == 1 else ")")
        raise ValueError(f"{what} has shape {tuple(found)}, expected {shown} for cell={cell!r}")


def params_from_torch(
    state_dict: Any,
    *,
    cell: str,
    num_layers: int = 1,
    bidirectional: bool = False,
    rnn_prefix: str | None = None,
    head_prefix: str | None = "fc",
    nonlinearity: str = "tanh",
) -> dict[str, Any]:
    """The :class:`jaxseq.nn.classifier.RecurrentClassifier` parameters of a PyTorch model.

    Args:
      state_dict: the model's ``state_dict()`` (a mapping from PyTorch's key names to
        tensors or NumPy arrays), or the ``torch.nn.Module`` itself (then its recurrent
        sub-module's settings are checked too: ``nonlinearity``, ``proj_size``,
        ``bias``, ``num_layers``, ``bidirectional`` and the cell type). Keys are
        ``{rnn_prefix}.weight_ih_l{k}[_reverse]`` etc. and ``{head_prefix}.weight`` /
        ``.bias``; every key must be used (strict, like ``load_state_dict``).
      cell: ``"rnn"`` (``nn.RNN`` with tanh), ``"lstm"`` (``nn.LSTM``) or ``"gru"``
        (``nn.GRU``), as for ``RecurrentClassifier``.
      num_layers: stacked layers (PyTorch's ``num_layers``).
      bidirectional: PyTorch's ``bidirectional``.
      rnn_prefix: the recurrent sub-module's name in the state_dict; ``None`` (default)
        is the cell's name, as the reference study names it (``rnn``, ``lstm`` or
        ``gru``); ``""`` for the ``state_dict`` of a bare ``nn.LSTM`` etc.
      head_prefix: the ``Linear`` head's name (default ``"fc"``, the study's); ``None``
        for a state_dict without a head (the result then has no ``"head"``).
      nonlinearity: the ``nn.RNN``'s ``nonlinearity`` (a state_dict does not record
        it); only ``"tanh"``.

    Returns:
      The ``"params"`` collection: ``{"cell_0": {...}, "cell_0_backward": {...}, ...,
      "head": {"kernel": [D*H, C], "bias": [C]}}``, nested dicts of NumPy arrays
      (copies, in the state_dict's dtype, float32 for a default PyTorch module) laid out
      as in the module docstring; use as ``model.apply({"params": params}, x)``. The
      hidden size ``H`` and input size are read from the weights.

    Raises:
      ValueError: (one line) for an unknown cell, ``nonlinearity`` other than ``"tanh"``,
        or a bad ``num_layers``/``bidirectional``; for a missing or unexpected key (named;
        a ``weight_hr_l{k}`` key means ``proj_size > 0`` and a missing bias means
        ``bias=False``, both refused); for an array whose shape does not fit the model
        (the key, the found and the expected shape); for a module whose settings do
        not match the request.
    """
    _check_common(cell, num_layers, bidirectional)
    if nonlinearity != "tanh":
        raise ValueError(f"nonlinearity={nonlinearity!r} is not supported; only 'tanh' "
                         f"(Flax's nn.SimpleCell)")
    rnn_prefix = cell if rnn_prefix is None else rnn_prefix
    if callable(getattr(state_dict, "state_dict", None)):
        _check_module(state_dict, cell, num_layers, bidirectional, rnn_prefix)
        state_dict = state_dict.state_dict()
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"state_dict must be a mapping of names to arrays (or a torch "
                         f"module), got {type(state_dict).__name__}")
    unused = dict(state_dict)
    num_gates = len(_GATES[cell])

    def take(key: str, expected: tuple[int | None, ...], prefix: str) -> np.ndarray:
        if key not in unused:
            if "bias_" in key and _key(rnn_prefix, "weight_ih_l0") in state_dict:
                raise ValueError(f"missing key {key!r}: a recurrent module built with "
                                 f"bias=False is not supported (Flax's cells always have "
                                 f"biases)")
            nearby = sorted(k for k in state_dict if k.startswith(_key(prefix, "")))
            hint = (f"; keys under {prefix!r}: {', '.join(nearby)}" if nearby else
                    f"; no key starts with {_key(prefix, '')!r}: pass the right prefix "
                    f"(the first keys are {', '.join(list(state_dict)[:6])})")
            raise ValueError(f"missing key {key!r} for cell={cell!r}, num_layers="
                             f"{num_layers}, bidirectional={bidirectional}{hint}")
        value = _numpy(unused.pop(key))
        _check_shape(repr(key), value.shape, expected, cell)
        return value

    for key in state_dict:
        if "weight_hr_l" in key:
            raise ValueError(f"{key!r} is an LSTM projection (proj_size > 0); only "
                             f"proj_size=0 is supported (Flax's LSTM cells have none)")

    # The hidden size from layer 0's recurrent weight [gates * H, H].
    probe = _key(rnn_prefix, "weight_hh_l0")
    found = take(probe, (None, None), rnn_prefix).shape
    hidden = found[1]
    _check_shape(repr(probe), found, (num_gates * hidden, hidden), cell)
    unused[probe] = state_dict[probe]  # layer 0 takes it again below, with the full check
    expected_keys = {_key(rnn_prefix, f"{kind}{suffix}") for _, suffix, _ in
                     _directions(num_layers, bidirectional) for kind in _TORCH_SUFFIXES}
    if head_prefix is not None:
        expected_keys |= {_key(head_prefix, "weight"), _key(head_prefix, "bias")}
    _refuse_unexpected(sorted(set(state_dict) - expected_keys), cell, num_layers,
                       bidirectional, rnn_prefix, head_prefix)
    directions = 2 if bidirectional else 1
    params: dict[str, Any] = {}
    input_size = None  # layer 0's, read from weight_ih_l0; both directions must agree
    for layer, suffix, name in _directions(num_layers, bidirectional):
        in_features = input_size if layer == 0 else directions * hidden
        rows = num_gates * hidden
        w_ih, w_hh, b_ih, b_hh = (
            take(_key(rnn_prefix, f"{kind}{suffix}"), expected, rnn_prefix)
            for kind, expected in zip(_TORCH_SUFFIXES, ((rows, in_features), (rows, hidden),
                                                         (rows,), (rows,)), strict=True))
        if layer == 0:
            input_size = w_ih.shape[1]
        params[name] = _cell_from_torch(cell, hidden, w_ih, w_hh, b_ih, b_hh)
    if head_prefix is not None:
        weight = take(_key(head_prefix, "weight"), (None, directions * hidden), head_prefix)
        bias = take(_key(head_prefix, "bias"), (weight.shape[0],), head_prefix)
        params["head"] = {"kernel": np.ascontiguousarray(weight.T), "bias": bias}
    return params


def _refuse_unexpected(keys: list[str], cell: str, num_layers: int, bidirectional: bool,
                       rnn_prefix: str, head_prefix: str | None) -> None:
    if keys:
        raise ValueError(f"unexpected key {keys[0]!r} in the state_dict for cell={cell!r}, "
                         f"num_layers={num_layers}, bidirectional={bidirectional}, "
                         f"rnn_prefix={rnn_prefix!r}, head_prefix={head_prefix!r}")


def _cell_from_torch(cell: str, hidden: int, w_ih: np.ndarray, w_hh: np.ndarray,
                     b_ih: np.ndarray, b_hh: np.ndarray) -> dict[str, Any]:
    """One direction of one layer: PyTorch's four arrays -> Flax's cell sub-tree."""
    def block(array: np.ndarray, gate: int) -> np.ndarray:
        return array[gate * hidden:(gate + 1) * hidden]

    def kernel(weight: np.ndarray, gate: int) -> np.ndarray:
        return np.ascontiguousarray(block(weight, gate).T)

    if cell == "rnn":
        return {"i": {"kernel": kernel(w_ih, 0), "bias": b_ih + b_hh},
                "h": {"kernel": kernel(w_hh, 0)}}
    if cell == "lstm":
        out: dict[str, Any] = {}
        for k, gate in enumerate(_GATES["lstm"]):
            out[f"i{gate}"] = {"kernel": kernel(w_ih, k)}
            out[f"h{gate}"] = {"kernel": kernel(w_hh, k), "bias": block(b_ih, k) + block(b_hh, k)}
        return out
    r, z, n = range(3)
    return {
        "ir": {"kernel": kernel(w_ih, r), "bias": block(b_ih, r) + block(b_hh, r)},
        "iz": {"kernel": kernel(w_ih, z), "bias": block(b_ih, z) + block(b_hh, z)},
        "in": {"kernel": kernel(w_ih, n), "bias": block(b_ih, n).copy()},
        "hr": {"kernel": kernel(w_hh, r)},
        "hz": {"kernel": kernel(w_hh, z)},
        "hn": {"kernel": kernel(w_hh, n), "bias": block(b_hh, n).copy()},
    }


def _cell_leaf_shapes(cell: str, in_features: int | None,
                      hidden: int) -> dict[str, dict[str, tuple[int | None, ...]]]:
    """Flax's parameter shapes of one cell (``None``: not fixed, layer 0's input size)."""
    if cell == "rnn":
        return {"i": {"kernel": (in_features, hidden), "bias": (hidden,)},
                "h": {"kernel": (hidden, hidden)}}
    if cell == "lstm":
        shapes: dict[str, dict[str, tuple[int | None, ...]]] = {}
        for gate in _GATES["lstm"]:
            shapes[f"i{gate}"] = {"kernel": (in_features, hidden)}
            shapes[f"h{gate}"] = {"kernel": (hidden, hidden), "bias": (hidden,)}
        return shapes
    return {**{f"i{g}": {"kernel": (in_features, hidden), "bias": (hidden,)} for g in "rzn"},
            "hr": {"kernel": (hidden, hidden)}, "hz": {"kernel": (hidden, hidden)},
            "hn": {"kernel": (hidden, hidden), "bias": (hidden,)}}


def params_to_torch(
    params: Mapping[str, Any],
    *,
    cell: str,
    num_layers: int = 1,
    bidirectional: bool = False,
    rnn_prefix: str | None = None,
    head_prefix: str | None = "fc",
) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` (NumPy arrays) from classifier parameters.

    The parameters are those of :class:`~jaxseq.nn.classifier.RecurrentClassifier`.

    The inverse of :func:`params_from_torch` up to PyTorch's bias split: the combined
    bias of a gate goes into ``bias_ih`` and ``bias_hh`` is zeros, except the GRU's
    ``hn/bias``, which goes to its own place in ``bias_hh`` (see the module docstring).
    Load with ``module.load_state_dict({k: torch.from_numpy(v) for k, v in
    state.items()})`` into a module built with the same cell, ``hidden_size``,
    ``num_layers`` and ``bidirectional`` (any ``batch_first``).

    Args:
      params: the ``"params"`` collection of a ``RecurrentClassifier`` (``{"cell_0":
        ..., "head": ...}``; a whole variables dict ``{"params": {...}}`` is accepted
        too); arrays may be NumPy or JAX.
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      num_layers: the model's ``num_layers``.
      bidirectional: the model's ``bidirectional``.
      rnn_prefix: the recurrent sub-module's name for the keys; ``None`` (default) is
        the cell's name, ``""`` gives bare ``weight_ih_l0`` keys.
      head_prefix: the head's name (default ``"fc"``); ``None`` when ``params`` has no
        ``"head"`` (or to leave it out).

    Returns:
      ``{key: np.ndarray}`` in PyTorch's key order (``{rnn_prefix}.weight_ih_l0``,
      ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, then the ``_reverse`` ones, per
      layer; then ``{head_prefix}.weight [C, D*H]`` and ``.bias [C]``), float32 for a
      float32 tree.

    Raises:
      ValueError: (one line) for an unknown cell or bad ``num_layers`` /
        ``bidirectional``; a missing or unexpected entry of ``params`` (named by its
        path, e.g. ``cell_1_backward/hn/bias``); an array whose shape does not fit (the
        path, the found and the expected shape).
    """
    _check_common(cell, num_layers, bidirectional)
    rnn_prefix = cell if rnn_prefix is None else rnn_prefix
    if not isinstance(params, Mapping):
        raise ValueError(f"params must be a mapping (a Flax parameter tree), got "
                         f"{type(params).__name__}")
    if set(params) == {"params"}:
        params = params["params"]
    directions = 2 if bidirectional else 1

    def leaf(path: tuple[str, ...], expected: tuple[int | None, ...]) -> np.ndarray:
        node: Any = params
        for depth, part in enumerate(path):
            if not isinstance(node, Mapping) or part not in node:
                raise ValueError(f"params has no {'/'.join(path[:depth + 1])!r} for "
                                 f"cell={cell!r}, num_layers={num_layers}, "
                                 f"bidirectional={bidirectional}")
            node = node[part]
        value = _numpy(node)
        _check_shape(f"params {'/'.join(path)!r}", value.shape, expected, cell)
        return value

    expected_names = {name for _, _, name in _directions(num_layers, bidirectional)}
    if head_prefix is not None:
        expected_names.add("head")
    extra_names = sorted(set(params) - expected_names)
    if extra_names:
        raise ValueError(f"unexpected entry {extra_names[0]!r} in params for "
                         f"num_layers={num_layers}, bidirectional={bidirectional}, "
                         f"head_prefix={head_prefix!r}")
    probe_name = {"rnn": "h", "lstm": "hi", "gru": "hr"}[cell]
    hidden = leaf(("cell_0", probe_name, "kernel"), (None, None)).shape[1]
    state: dict[str, np.ndarray] = {}
    # Layer 0's input size, from one kernel of cell_0: every input kernel of layer 0 (both
    # directions) must agree with it.
    first_input = {"rnn": "i", "lstm": "ii", "gru": "ir"}[cell]
    input_size = leaf(("cell_0", first_input, "kernel"), (None, hidden)).shape[0]
    for layer, suffix, name in _directions(num_layers, bidirectional):
        in_features = input_size if layer == 0 else directions * hidden
        shapes = _cell_leaf_shapes(cell, in_features, hidden)
        tree = {gate: {part: leaf((name, gate, part), shape) for part, shape in parts.items()}
                for gate, parts in shapes.items()}
        extra = _extra_paths(params[name], shapes, name)
        if extra:
            raise ValueError(f"unexpected entry {extra[0]!r} in params for cell={cell!r}")
        for key, value in zip(_TORCH_SUFFIXES, _cell_to_torch(cell, tree), strict=True):
            state[_key(rnn_prefix, f"{key}{suffix}")] = value
    if head_prefix is not None:
        kernel = leaf(("head", "kernel"), (directions * hidden, None))
        bias = leaf(("head", "bias"), (kernel.shape[1],))
        extra = _extra_paths(params["head"], {"kernel": (), "bias": ()}, "head")
        if extra:
            raise ValueError(f"unexpected entry {extra[0]!r} in params")
        state[_key(head_prefix, "weight")] = np.ascontiguousarray(kernel.T)
        state[_key(head_prefix, "bias")] = bias
    return state


def _extra_paths(node: Mapping[str, Any], shapes: Mapping[str, Any], path: str) -> list[str]:
    """Paths in ``node`` that ``shapes`` does not name (one level of nesting below)."""
    extra = []
    for name, child in node.items():
        if name not in shapes:
            extra.append(f"{path}/{name}")
        elif isinstance(child, Mapping) and isinstance(shapes[name], Mapping):
            extra += [f"{path}/{name}/{part}" for part in child if part not in shapes[name]]
    return sorted(extra)


def _cell_to_torch(cell: str, tree: Mapping[str, Mapping[str, np.ndarray]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One direction of one layer: Flax's cell sub-tree -> ``(W_ih, W_hh, b_ih, b_hh)``."""
    def weight(names: list[str]) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([tree[n]["kernel"].T for n in names]))

    if cell == "rnn":
        bias = tree["i"]["bias"]
        return weight(["i"]), weight(["h"]), bias.copy(), np.zeros_like(bias)
    if cell == "lstm":
        gates = _GATES["lstm"]
        bias = np.concatenate([tree[f"h{g}"]["bias"] for g in gates])
        return (weight([f"i{g}" for g in gates]), weight([f"h{g}" for g in gates]),
                bias, np.zeros_like(bias))
    b_ih = np.concatenate([tree[f"i{g}"]["bias"] for g in "rzn"])
    b_hn = tree["hn"]["bias"]
    b_hh = np.concatenate([np.zeros_like(b_hn), np.zeros_like(b_hn), b_hn])
    return weight(["ir", "iz", "in"]), weight(["hr", "hz", "hn"]), b_ih, b_hh
