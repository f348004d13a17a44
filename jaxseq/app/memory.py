"""Will a run fit in memory? Checked before anything is allocated, one line when it cannot.

The model's part is XLA's own figure: the train step compiled on abstract shapes
(``jax.jit(...).lower(...).compile().memory_analysis()``: arguments, outputs and temporaries
of one step, donated buffers counted once), with the parameter and optimizer-state bytes
read off ``jax.eval_shape``. The data's part is the bytes of the arrays the run holds. On a
CPU every device lives in host memory, so the per-device bytes count once per device and
everything is compared with the host's available memory; on an accelerator the device part
is compared with the device's free memory and the host copies with the host's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

__all__ = ["Estimate", "MemoryLimitError", "adder_estimate", "available_device_bytes",
           "available_host_bytes", "check_fits", "format_bytes", "mnist_estimate",
           "seeds_at_once", "step_bytes", "tree_bytes"]


class MemoryLimitError(ValueError):
    """A run that cannot fit in the memory available (one-line message)."""


def format_bytes(n: float) -> str:
    """``1.5 GB``-style (powers of 1000), for messages."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes a run needs, by part.

    Attributes:
      host_data: examples held in host memory (NumPy arrays).
      device_data: examples on each device (training set replicated, evaluation sets).
      parameters: the parameters (per device).
      optimizer: the optimizer state (per device).
      activations: the rest of a compiled train step: gradients, activations and
        temporaries (per device; XLA's figure).
      devices: JAX devices sharing the host's memory (CPU devices), 0 on an accelerator.
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
        times = max(self.devices, 1)
        named = (("data", self.host_data + times * self.device_data),
                 ("parameters", times * self.parameters),
                 ("optimizer state", times * self.optimizer),
                 ("activations", times * self.activations))
        return ", ".join(f"{name} {format_bytes(n)}" for name, n in named if n)


def tree_bytes(tree: Any) -> int:
    """Bytes of every array (or ``jax.ShapeDtypeStruct``) leaf of ``tree``."""
    import jax

    return sum(int(np.prod(leaf.shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
               for leaf in jax.tree.leaves(tree))


def step_bytes(model: Any, optimizer: Any, objective: Any, inputs: Any, labels: Any
               ) -> tuple[int, int, int]:
    """``(parameters, optimizer state, the rest)``: bytes of one compiled train step on one
    device, from abstract shapes (nothing allocated, however large).

    Args:
      model: a Flax module.
      optimizer: an optax transformation.
      objective: a :class:`jaxseq.train.Objective`.
      inputs, labels: ``jax.ShapeDtypeStruct`` of one device's batch.
    """
    import jax

    from jaxseq.train import create_train_state, train_step

    example = jax.ShapeDtypeStruct((1, *inputs.shape[1:]), inputs.dtype)
    state = jax.eval_shape(lambda x: create_train_state(model, jax.random.key(0), x,
                                                        optimizer=optimizer), example)
    step = jax.jit(lambda s, x, y: train_step(s, x, y, objective), donate_argnums=0)
    stats = step.lower(state, inputs, labels).compile().memory_analysis()
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             - stats.alias_size_in_bytes + stats.temp_size_in_bytes)
    params, opt_state = tree_bytes(state.params), tree_bytes(state.opt_state)
    return params, opt_state, max(0, total - params - opt_state)


def available_host_bytes() -> int | None:
    """Host memory available to a new allocation (``MemAvailable``, else free pages)."""
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
    """Free memory of the first JAX device (``memory_stats()``), ``None`` where it has none
    to report (CPU)."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def check_fits(estimate: Estimate, what: str, advice: str = "",
               host_available: int | None = None,
               device_available: int | None = None) -> Estimate:
    """Refuse a run whose estimate exceeds the memory available (measured now unless given;
    unknown skips the check).

    Returns:
      ``estimate``, when it fits.

    Raises:
      MemoryLimitError: one line: bytes needed by part, bytes available, ``advice``.
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


def _batch(batch_size: int, device_count: int, shape: tuple, dtype: Any) -> Any:
    import jax

    return jax.ShapeDtypeStruct((-(-batch_size // max(device_count, 1)), *shape), dtype)


def seeds_at_once(config: Any) -> int:
    """How many seeds of a task's ``config`` train at once: all, as one program
    (:func:`jaxseq.train.seeds_together`), else 1."""
    from jaxseq.train import seeds_together

    return config.seeds if config.seeds > 1 and seeds_together(config.seeds_together) else 1


def mnist_estimate(config: Any, splits: Any, devices: int, device_count: int) -> Estimate:
    """The :class:`Estimate` of the largest model of an MNIST run (of its seeds, when they
    train as one program).

    Args:
      config: a :class:`jaxseq.tasks.mnist.config.MnistConfig`.
      splits: the run's loaded splits (their host copies are not counted again).
      devices: :func:`devices_sharing_host`.
      device_count: devices the batch is split over.
    """
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.nn.registry import cell_info
    from jaxseq.optim import make_optimizer
    from jaxseq.train import CLASSIFICATION

    device_data = sum(part.inputs.nbytes + part.labels.nbytes for part in splits)
    example = splits.train.inputs.shape[1:]
    cell = max(config.cells, key=lambda name: len(cell_info(name).gates))  # the largest
    model = RecurrentClassifier(cell=cell, features=config.hidden_size,
                                num_layers=config.num_layers, bidirectional=config.bidirectional,
                                pooling=config.pooling, dtype=config.dtype)
    parts = step_bytes(model, make_optimizer("adam", config.learning_rate), CLASSIFICATION,
                       _batch(config.batch_size, device_count, example, np.float32),
                       _batch(config.batch_size, device_count, (), np.int32))
    return Estimate(0, device_data, *(seeds_at_once(config) * n for n in parts), devices)


def adder_estimate(config: Any, devices: int, device_count: int) -> Estimate:
    """The :class:`Estimate` of one seed of an adder run (of all, when they train as one
    program), before any data is generated.

    Host data: the generated additions (inputs ``[N, bits, 2]`` and labels ``[N, bits]``
    int32) and their split copy, and for the length table one length's additions padded to
    the longest length, three copies. Device data: the training and test sets. The step is
    the larger of a training step and a forward pass of the length table.

    Args:
      config: a :class:`jaxseq.tasks.adder.config.AdderConfig`.
      devices: :func:`devices_sharing_host`.
      device_count: devices the batch is split over.
    """
    import jax

    from jaxseq.optim import make_optimizer
    from jaxseq.tasks.adder.model import BinaryAdder
    from jaxseq.tasks.adder.task import get_objective

    int32 = np.dtype(np.int32).itemsize
    example_bytes = config.bits * 3 * int32  # 2 input bits and 1 label bit per step
    longest = max(config.eval_bits)
    seeds = seeds_at_once(config)
    host = (2 * seeds * config.samples * example_bytes
            + 3 * config.eval_samples * longest * 3 * int32)
    model = BinaryAdder(config.hidden_size, dtype=config.dtype)
    params, opt_state, train = step_bytes(
        model, make_optimizer(config.optimizer, config.learning_rate),
        get_objective(config.loss), _batch(config.batch_size, device_count, (config.bits, 2),
                                           np.int32),
        _batch(config.batch_size, device_count, (config.bits,), np.int32))
    rows = min(config.eval_batch_size, config.eval_samples * len(set(config.eval_bits)))
    inputs = jax.ShapeDtypeStruct((rows, longest, 2), np.int32)
    params_like = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), inputs)["params"]
    stats = jax.jit(lambda p, x: model.apply({"params": p}, x)).lower(
        params_like, inputs).compile().memory_analysis()
    forward = stats.temp_size_in_bytes + stats.output_size_in_bytes + inputs.size * int32
    return Estimate(host, config.samples * example_bytes * seeds, params * seeds,
                    opt_state * seeds, max(train * seeds, forward), devices)
