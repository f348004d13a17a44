"""JAX start-up for the experiment scripts: the host CPU split into devices (so that the
data-parallel loop uses every core), other processes joined; both before JAX starts."""

from __future__ import annotations

import os
from collections.abc import Callable

from jaxseq.app import distributed as multi
from jaxseq.checks import check_positive_int

#: The XLA flag that splits the host CPU into several JAX devices.
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def default_cpu_devices(batch_size: int) -> int:
    """The largest divisor of ``batch_size`` not above the CPU cores this process may use
    (a batch splits evenly across devices): 2 for batch 64 on 2 cores, 1 for an odd one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(d for d in range(1, max(1, cores) + 1) if batch_size % d == 0)


def forced_cpu_devices() -> int | None:
    """The CPU device count that ``XLA_FLAGS`` sets (it wins over ``--cpu-devices``: XLA
    reads it when JAX starts), or ``None``."""
    for flag in os.environ.get("XLA_FLAGS", "").split():
        if flag.startswith(CPU_DEVICES_FLAG + "="):
            return int(flag.split("=", 1)[1])
    return None


def devices_source(requested: int | None = None) -> str:
    """Where the CPU device count comes from, for messages: ``", set by XLA_FLAGS=...,
    which overrides --cpu-devices 1"`` when ``XLA_FLAGS`` sets it, else ``""``."""
    forced = forced_cpu_devices()
    if forced is None:
        return ""
    overridden = (f", which overrides --cpu-devices {requested}"
                  if requested is not None and requested != forced else "")
    return f", set by XLA_FLAGS={CPU_DEVICES_FLAG}={forced}{overridden}"


def set_cpu_devices(count: int) -> int:
    """Expose the host CPU to JAX as ``count`` devices, before JAX starts its backends.

    Returns:
      The CPU device count used: ``count``, or the one already in ``XLA_FLAGS``.

    Raises:
      ValueError: if ``count`` is not a positive integer.
      RuntimeError: if JAX's backends are already initialised.
    """
    check_positive_int("the CPU device count", count)
    if forced_cpu_devices() is not None:
        return forced_cpu_devices()
    flags = os.environ.get("XLA_FLAGS", "")
    from jax._src import xla_bridge  # no public API tells whether backends started

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("set_cpu_devices must be called before JAX initialises its backends "
                           "(before the first computation or jax.devices())")
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_DEVICES_FLAG}={count}".strip()
    return count


def start(cpu_devices: int | None, batch_size: int, distributed: bool = False,
          log: Callable[[str], None] | None = print, *,
          coordinator_address: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, heartbeat_timeout: int | None = None) -> int:
    """Start JAX for an experiment: split the CPU into devices, then join other processes.

    Args:
      cpu_devices: CPU devices wanted (no effect on a GPU or TPU), or ``None`` for
        :func:`default_cpu_devices` of ``batch_size``.
      batch_size: the training batch size.
      distributed: join a multi-process run (:func:`jaxseq.app.distributed.initialize`).
      log: receives a note when JAX already runs with another device count.
      coordinator_address, num_processes, process_id, heartbeat_timeout: as in
        :class:`jaxseq.app.distributed.Settings` (the first three imply ``distributed``).

    Returns:
      The CPU device count in use.

    Raises:
      ValueError: one line, for inconsistent multi-process settings or a failed
        ``jax.distributed.initialize()``.
    """
    explicit = (coordinator_address, num_processes, process_id)
    multi_settings = None
    if distributed or any(v is not None for v in explicit):
        timeouts = {} if heartbeat_timeout is None else {"heartbeat_timeout": heartbeat_timeout}
        try:
            multi_settings = multi.Settings(*explicit, **timeouts)
        except ValueError as error:  # named by the flags given, --distributed or not
            raise ValueError(f"{'--distributed' if distributed else 'multi-process flags'}: "
                             f"{error}") from None
    import jax

    if cpu_devices is None:
        cpu_devices = default_cpu_devices(batch_size)
    elif log is not None and forced_cpu_devices() not in (None, cpu_devices):
        log(f"note: the CPU is split into {forced_cpu_devices()} devices"
            f"{devices_source(cpu_devices)} (XLA reads XLA_FLAGS when JAX starts)")
    try:
        cpu_devices = set_cpu_devices(cpu_devices)  # XLA_FLAGS may win
    except RuntimeError:
        # JAX already started in this process: its devices stay as they are.
        if jax.default_backend() == "cpu" and jax.device_count() != cpu_devices:
            if log is not None:
                log(f"note: JAX is already running on {jax.device_count()} CPU device(s); "
                    f"--cpu-devices {cpu_devices} is not applied")
            cpu_devices = jax.device_count()
    if multi_settings is not None:
        try:
            multi.initialize(multi_settings)
        except ValueError as error:
            raise ValueError(f"--distributed: {error}") from error
    return cpu_devices
