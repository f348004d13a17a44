"""Data parallelism with JAX's own sharding: a one-axis mesh over the devices, with the
data and the state replicated on it and every batch split along its axis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: Name of the mesh axis that batches are split along.
DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` over ``devices`` in order (default ``jax.devices()``,
    every device of every process), its one "Auto" axis named :data:`DATA_AXIS`.

    Raises:
      ValueError: for an empty device list.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    # "Auto" axes: XLA propagates the sharding from the constraints ("Explicit" axes, the
    # default of jax.make_mesh, would make it part of the array types).
    axis_type = getattr(jax.sharding, "AxisType", None)
    auto = {"axis_types": (axis_type.Auto,)} if axis_type is not None else {}
    return Mesh(np.array(devices), (DATA_AXIS,), **auto)


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding that holds a whole copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


def to_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """``tree`` placed with ``sharding``; on several processes each gives its own shards
    of the same host values."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def check_divisible(name: str, batch_size: int, mesh: Mesh) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a multiple of ``mesh.size``."""
    if batch_size % mesh.size:
        raise ValueError(
            f"{name} {batch_size} must be a multiple of the number of devices ({mesh.size}), "
            f"since each batch is split evenly across them; use e.g. "
            f"{max(mesh.size, batch_size // mesh.size * mesh.size)}"
        )


def split_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """``x [batch, ...]`` constrained to be split along the mesh's data axis (as is without one)."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))
