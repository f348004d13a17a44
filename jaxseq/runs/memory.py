"""Will a run fit in memory? An estimate of the bytes it needs, checked before allocating.

Sizes that cannot fit (``experiments/adder.py --samples 10000000000``,
``experiments/mnist.py --hidden-size 1000000``, a huge ``--eval-samples``) are refused
with one line (a :class:`MemoryLimitError`, a ``ValueError``: exit 2 in the scripts)
instead of a ``MemoryError`` traceback or the kernel's OOM killer hours later.

The estimate (:class:`Estimate`, all in bytes; ``P`` parameters of 4 bytes; ``B`` the
per-device batch, ``T`` time steps, ``H`` hidden units, ``G`` gates of the cell (RNN 1,
GRU 3, LSTM 4), ``L`` layers, ``D`` directions)::

    data        = host copies of the examples (generated, split, padded for evaluation)
                  + the training set on every device (replicated) + the evaluation sets
    parameters  = 4 P        (float32; the counts come from jax.eval_shape of model.init,
                              so no parameter is allocated)
    optimizer   = the optimizer state's bytes (jax.eval_shape of tx.init; Adam: 8 P + 4)
                  + 4 P for the gradients
    activations = 2 * 4 * B * T * L * D * (G + 2) * H
                  (what the backward pass keeps per step: the gates and the hidden
                  state (G + 2 vectors of H floats), doubled for the gradients' temporaries)

On a CPU every JAX device lives in host memory: the state (parameters, optimizer) is
counted once per device and everything is compared with the host's available memory
(``MemAvailable`` of ``/proc/meminfo``, else ``os.sysconf``). On a GPU or TPU the
device part (training data, state, activations) is compared with the device's free
memory (``memory_stats()``: ``bytes_limit - bytes_in_use``) and the host copies with
the host's. The estimate is deliberately simple (XLA's own buffers and fusion
temporaries are not counted); it is meant to catch sizes off by orders of magnitude,
which it does with a wide margin, not to pack memory to the last byte.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["Estimate", "MemoryLimitError", "activation_bytes", "available_device_bytes",
           "available_host_bytes", "check_fits", "format_bytes", "tree_bytes"]

FLOAT32 = 4
INT32 = 4


class MemoryLimitError(ValueError):
    """A run that cannot fit in the memory available (one-line message)."""


def format_bytes(n: float) -> str:
    """``1.5 GB``-style (powers of 1000), for messages."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a run needs, by part (see the module docstring for the formula).

    Attributes:
      host_data: examples held in host memory (NumPy arrays).
      device_data: examples on each device (training set replicated, evaluation sets).
      parameters: the parameters (per device).
      optimizer: the optimizer state and the gradients (per device).
      activations: a training step's activations (per device).
      devices: JAX devices sharing the host's memory (CPU devices), or 0 on an
        accelerator (device memory is separate).
    """

    host_data: int = 0
    device_data: int = 0
    parameters: int = 0
    optimizer: int = 0
    activations: int = 0
    devices: int = 1

    @property
    def per_device(self) -> int:
        """Bytes on one device: data, parameters, optimizer, activations."""
        return self.device_data + self.parameters + self.optimizer + self.activations

    @property
    def host(self) -> int:
        """Bytes of host memory: the host copies, plus every CPU device's share."""
        return self.host_data + self.devices * self.per_device

    def parts(self) -> str:
        """``data 1.2 GB, parameters 3 MB, ...`` for messages (non-zero parts only)."""
        named = (("data", self.host_data + max(self.devices, 1) * self.device_data),
                 ("parameters", max(self.devices, 1) * self.parameters),
                 ("optimizer state", max(self.devices, 1) * self.optimizer),
                 ("activations", max(self.devices, 1) * self.activations))
        return ", ".join(f"{name} {format_bytes(n)}" for name, n in named if n)


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ``jax.ShapeDtypeStruct``) leaf of ``tree``."""
    import jax
    import numpy as np

    return sum(int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def activation_bytes(batch: int, time: int, hidden: int, gates: int, layers: int = 1,
                     directions: int = 1) -> int:
    """``2 * 4 * batch * time * layers * directions * (gates + 2) * hidden``: what the
    backward pass of a recurrent layer stack keeps (float32), doubled for temporaries.

    Args:
      batch: examples per device per step.
      time: sequence length.
      hidden: hidden units per direction.
      gates: gates of the cell (1 Elman RNN, 3 GRU, 4 LSTM).
      layers, directions: the stack's shape.

    Returns:
      Bytes (an int; Python ints do not overflow).
    """
    return 2 * FLOAT32 * batch * time * layers * directions * (gates + 2) * hidden


def available_host_bytes() -> int | None:
    """Host memory available to a new allocation: ``MemAvailable`` of ``/proc/meminfo``
    (Linux), else free pages times page size (``os.sysconf``), else ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_bytes() -> int | None:
    """Free memory of the first JAX device (``bytes_limit - bytes_in_use`` of its
    ``memory_stats()``), or ``None`` where it has none to report (CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def check_fits(estimate: Estimate, what: str, advice: str = "",
               host_available: int | None = None,
               device_available: int | None = None) -> Estimate:
    """Refuse (:class:`MemoryLimitError`) a run whose estimate exceeds the memory available.

    Args:
      estimate: the run's :class:`Estimate`.
      what: the run, for the message (``"this run"``, ``"the gru model"``).
      advice: what to change, for the message (``"use a smaller --hidden-size"``).
      host_available, device_available: bytes available (default: measured now by
        :func:`available_host_bytes` and, for accelerators (``estimate.devices == 0``),
        :func:`available_device_bytes`); ``None`` measured as unknown skips that check.

    Returns:
      ``estimate``, when it fits.

    Raises:
      MemoryLimitError: one line: bytes needed by part, bytes available, the advice.
    """
    host_available = available_host_bytes() if host_available is None else host_available
    if estimate.devices == 0 and device_available is None:
        device_available = available_device_bytes()
    tail = f"; {advice}" if advice else ""
    if host_available is not None and estimate.host > host_available:
        raise MemoryLimitError(
            f"{what} needs about {format_bytes(estimate.host)} of memory ({estimate.parts()}) "
            f"but {format_bytes(host_available)} is available{tail}")
    if (estimate.devices == 0 and device_available is not None
            and estimate.per_device > device_available):
        raise MemoryLimitError(
            f"{what} needs about {format_bytes(estimate.per_device)} per device "
            f"({estimate.parts()}) but the device has {format_bytes(device_available)} "
            f"free{tail}")
    return estimate


def devices_sharing_host() -> int:
    """How many JAX devices live in host memory: the local devices on a CPU, else 0."""
    import jax

    return jax.local_device_count() if jax.default_backend() == "cpu" else 0


def model_bytes(model: Any, example: Any, optimizer: Any) -> tuple[int, int]:
    """``(parameter bytes, optimizer-state + gradient bytes)`` of ``model`` with
    ``optimizer``, from ``jax.eval_shape`` (nothing allocated, however large).

    Args:
      model: a Flax module.
      example: one input ``[1, ...]`` (array or ``jax.ShapeDtypeStruct``).
      optimizer: an optax transformation.
    """
    import jax

    params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), example)["params"]
    opt_state = jax.eval_shape(optimizer.init, params)
    p = tree_bytes(params)
    return p, tree_bytes(opt_state) + p


def mnist_estimate(config: Any, sizes: Mapping[str, int], devices: int,
                   device_count: int) -> Estimate:
    """The :class:`Estimate` of the largest model of an MNIST run.

    Args:
      config: a :class:`jaxseq.tasks.mnist.task.MnistConfig`.
      sizes: examples per split: ``{"train", "validation", "test"}`` (the host copies
        are already loaded and not counted again).
      devices: :func:`devices_sharing_host`.
      device_count: devices the batch is split over.
    """
    import jax
    import numpy as np

    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.nn.registry import cell_info
    from jaxseq.optim import make_optimizer

    example_bytes = 28 * 28 * FLOAT32 + INT32
    device_data = (sizes["train"] + sizes["validation"] + sizes["test"]) * example_bytes
    best = Estimate(devices=devices)
    for cell in config.cells:
        model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                    num_layers=config.num_layers,
                                    bidirectional=config.bidirectional)
        params, optimizer = model_bytes(model, jax.ShapeDtypeStruct((1, 28, 28), np.float32),
                                        make_optimizer("adam", config.learning_rate))
        batch = -(-config.batch_size // max(device_count, 1))
        act = activation_bytes(batch, 28, config.hidden_size, len(cell_info(cell).gates),
                               config.num_layers, 2 if config.bidirectional else 1)
        estimate = Estimate(0, device_data, params, optimizer, act, devices)
        if estimate.host >= best.host:
            best = estimate
    return best


def adder_estimate(config: Any, devices: int, device_count: int) -> Estimate:
    """The :class:`Estimate` of one seed of an adder run (before any data is generated).

    Host data: the generated additions (inputs ``[N, bits, 2]`` and labels ``[N, bits]``
    int32) and their split copy, plus, for the length table, one length's
    ``eval_samples`` additions generated and padded to the longest length, three
    copies (generated, padded, batched). Device data: the training and test sets.

    Args:
      config: a :class:`jaxseq.tasks.adder.task.AdderConfig`.
      devices: :func:`devices_sharing_host`.
      device_count: devices the batch is split over.
    """
    import jax
    import numpy as np

    from jaxseq.nn.adder import BinaryAdder
    from jaxseq.optim import make_optimizer

    example_bytes = config.bits * 3 * INT32  # 2 input bits and 1 label bit per step
    longest = max(config.eval_bits)
    host = 2 * config.samples * example_bytes + 3 * config.eval_samples * longest * 3 * INT32
    model = BinaryAdder(config.hidden_size)
    params, optimizer = model_bytes(model, jax.ShapeDtypeStruct((1, config.bits, 2), np.int32),
                                    make_optimizer(config.optimizer, config.learning_rate))
    batch = -(-config.batch_size // max(device_count, 1))
    act = activation_bytes(batch, max(config.bits, longest), config.hidden_size, 2)
    return Estimate(host, config.samples * example_bytes, params, optimizer, act, devices)
