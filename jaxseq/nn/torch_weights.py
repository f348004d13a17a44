"""PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` + ``nn.Linear`` weights <-> Flax parameters.

Converts the ``state_dict`` of a PyTorch classifier built like the reference study's (a
recurrent module, then ``fc(out[:, -1, :])``) into the parameters of
:class:`jaxseq.nn.classifier.RecurrentClassifier`, and back. PyTorch's ``batch_first``
does not change the weights, and its bidirectional output (forward, then backward in
input order) is laid out as the classifier's. PyTorch's ``_l{k}`` and ``_l{k}_reverse``
are Flax's ``cell_{k}`` and ``cell_{k}_backward``; each kernel ``i{q}``/``h{q}`` is the
transpose of gate ``q``'s rows of ``W_ih``/``W_hh`` (PyTorch's gate order: ``i, f, g, o``,
``r, z, n``), each Flax bias the sum of PyTorch's two for its gate (the RNN's ``i``, the
LSTM's ``h{q}``, the GRU's ``ir``, ``iz``), except the GRU's ``in/bias = b_in`` and
``hn/bias = b_hn`` (inside the reset product, as in Flax); ``head/kernel = fc.weight.T``.
Going back, each sum goes to ``bias_ih`` and ``bias_hh`` is zeros (the GRU's ``b_hn`` keeps
its place): the same function, another bias split. Takes NumPy arrays or torch tensors.
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
# Per cell: Flax's biases, and which of PyTorch's (summed) each one holds.
_BIASES: dict[str, dict[str, tuple[str, ...]]] = {
    "rnn": {"i": ("ih", "hh")}, "lstm": {f"h{g}": ("ih", "hh") for g in "ifgo"},
    "gru": {"ir": ("ih", "hh"), "iz": ("ih", "hh"), "in": ("ih",), "hn": ("hh",)}}
#: The cells this module converts (names of :data:`jaxseq.nn.registry.CELLS`).
TORCH_CELLS = tuple(_GATES)

_TORCH_SUFFIXES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _numpy(value: Any) -> np.ndarray:
    """A NumPy copy of an array or a torch tensor (bfloat16 kept, via ml_dtypes)."""
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
    return [(layer, f"_l{layer}{reverse}", f"cell_{layer}{backward}")
            for layer in range(num_layers)
            for reverse, backward in (("", ""), ("_reverse", "_backward"))[:1 + bidirectional]]


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
    """The :class:`~jaxseq.nn.classifier.RecurrentClassifier` parameters of a PyTorch model.

    Args:
      state_dict: the model's ``state_dict()`` (tensors or NumPy arrays; every key must
        be used), or the ``torch.nn.Module`` (its recurrent module's settings are then
        checked too).
      cell: ``"rnn"`` (``nn.RNN``, tanh), ``"lstm"`` or ``"gru"``.
      num_layers: PyTorch's ``num_layers``.
      bidirectional: PyTorch's ``bidirectional``.
      rnn_prefix: the recurrent module's name in the keys; ``None``: the cell's name
        (the study's); ``""`` for a bare ``nn.LSTM`` etc.
      head_prefix: the ``Linear`` head's name; ``None`` for no head.
      nonlinearity: the ``nn.RNN``'s (not in a state_dict); only ``"tanh"``.

    Returns:
      ``{"cell_0": ..., "cell_0_backward": ..., "head": ...}``, NumPy copies.

    Raises:
      ValueError: one line, for an unknown cell or ``nonlinearity``, bad ``num_layers``
        or ``bidirectional``, a missing or unexpected key (``proj_size > 0`` and
        ``bias=False`` are refused), a wrong shape, or module settings that differ.

    Examples:
      >>> import numpy as np  # a GRU of 4 hidden units (3 gates x 4 rows), 3 inputs, 2 classes
      >>> state = {"gru.weight_ih_l0": np.ones((12, 3)), "gru.weight_hh_l0": np.ones((12, 4)),
      ...          "gru.bias_ih_l0": np.zeros(12), "gru.bias_hh_l0": np.zeros(12),
      ...          "fc.weight": np.ones((2, 4)), "fc.bias": np.zeros(2)}
      >>> params = params_from_torch(state, cell="gru")
      >>> sorted(params), sorted(params["cell_0"])
      (['cell_0', 'head'], ['hn', 'hr', 'hz', 'in', 'ir', 'iz'])
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
    unexpected = sorted(set(state_dict) - expected_keys)
    if unexpected:
        raise ValueError(f"unexpected key {unexpected[0]!r} in the state_dict for "
                         f"cell={cell!r}, num_layers={num_layers}, bidirectional="
                         f"{bidirectional}, rnn_prefix={rnn_prefix!r}, head_prefix={head_prefix!r}")
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


def _cell_from_torch(cell: str, hidden: int, w_ih: np.ndarray, w_hh: np.ndarray,
                     b_ih: np.ndarray, b_hh: np.ndarray) -> dict[str, Any]:
    """One direction of one layer: PyTorch's four arrays -> Flax's cell sub-tree."""
    def block(array: np.ndarray, gate: int) -> np.ndarray:
        return array[gate * hidden:(gate + 1) * hidden]

    out: dict[str, Any] = {}
    for k, gate in enumerate(_GATES[cell]):
        out[f"i{gate}"] = {"kernel": np.ascontiguousarray(block(w_ih, k).T)}
        out[f"h{gate}"] = {"kernel": np.ascontiguousarray(block(w_hh, k).T)}
    for name, sources in _BIASES[cell].items():
        parts = [block({"ih": b_ih, "hh": b_hh}[s], _GATES[cell].index(name[1:]))
                 for s in sources]
        out[name]["bias"] = parts[0] + parts[1] if len(parts) == 2 else parts[0].copy()
    return out


def _cell_leaf_shapes(cell: str, in_features: int | None,
                      hidden: int) -> dict[str, dict[str, tuple[int | None, ...]]]:
    """Flax's parameter shapes of one cell (``None``: not fixed, layer 0's input size)."""
    shapes: dict[str, dict[str, tuple[int | None, ...]]] = {}
    for gate in _GATES[cell]:
        shapes[f"i{gate}"] = {"kernel": (in_features, hidden)}
        shapes[f"h{gate}"] = {"kernel": (hidden, hidden)}
    for name in _BIASES[cell]:
        shapes[name]["bias"] = (hidden,)
    return shapes


def params_to_torch(
    params: Mapping[str, Any],
    *,
    cell: str,
    num_layers: int = 1,
    bidirectional: bool = False,
    rnn_prefix: str | None = None,
    head_prefix: str | None = "fc",
) -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` (NumPy arrays) of classifier parameters.

    The inverse of :func:`params_from_torch` up to PyTorch's bias split (see the module),
    for ``module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})``.

    ``params`` is a :class:`~jaxseq.nn.classifier.RecurrentClassifier`'s ``"params"`` (or
    ``{"params": ...}``) of NumPy or JAX arrays; the other arguments are as for
    :func:`params_from_torch` (``head_prefix=None`` leaves the head out).

    Returns:
      ``{key: np.ndarray}`` in PyTorch's key order.

    Raises:
      ValueError: one line, for an unknown cell, bad ``num_layers``/``bidirectional``, a
        missing or unexpected entry (named by its path), or an array of the wrong shape.
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
    gates = _GATES[cell]
    zeros = np.zeros_like(tree[next(iter(_BIASES[cell]))]["bias"])

    def weight(kind: str) -> np.ndarray:
        return np.ascontiguousarray(np.concatenate([tree[f"{kind}{g}"]["kernel"].T
                                                    for g in gates]))

    def bias(kind: str) -> np.ndarray:  # each Flax bias goes back to its first source
        found = {n[1:]: tree[n]["bias"] for n, src in _BIASES[cell].items() if src[0] == kind}
        return np.concatenate([found.get(g, zeros) for g in gates])

    return weight("i"), weight("h"), bias("ih"), bias("hh")
