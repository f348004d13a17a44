"""Data parallelism with JAX's own sharding: a one-axis mesh, :data:`DATA_AXIS`, over the
devices. The data and the state are replicated on it; every batch is split along it."""

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
    """A one-axis mesh, axis :data:`DATA_AXIS`, for data parallelism.

    Args:
      devices: the devices to split batches over; default ``jax.devices()``, i.e. every
        local device, and every device of every process after
        ``jax.distributed.initialize()``.

    Returns:
      A 1-D :class:`jax.sharding.Mesh` of shape ``(len(devices),)`` over the devices in
      the given order, its one axis named :data:`DATA_AXIS` (an "Auto" axis where JAX
      has axis types: sharding is propagated by XLA).

    Raises:
      ValueError: for an empty device list.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    # "Auto" axes: sharding is propagated by XLA from the constraints (not part of the
    # array types, as with "Explicit" axes, the default of jax.make_mesh).
    axis_type = getattr(jax.sharding, "AxisType", None)
    auto = {"axis_types": (axis_type.Auto,)} if axis_type is not None else {}
    return Mesh(np.array(devices), (DATA_AXIS,), **auto)


def _replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _to_mesh(tree: Any, sharding: NamedSharding) -> Any:
    """Place ``tree`` with ``sharding``. On several processes every process must hold
    the same host values (they do here: the data and the seeds are the same), and
    each contributes the shards of its own devices."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def _check_divisible(name: str, batch_size: int, mesh: Mesh) -> None:
    if batch_size % mesh.size:
        raise ValueError(
            f"{name} {batch_size} must be a multiple of the number of devices ({mesh.size}), "
            f"since each batch is split evenly across them; use e.g. "
            f"{max(mesh.size, batch_size // mesh.size * mesh.size)}"
        )


def _split_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Constrain a ``[batch, ...]`` array to be split along the mesh's data axis."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(DATA_AXIS)))
