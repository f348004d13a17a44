"""Process-level JAX settings for the experiment scripts: using every CPU core.

XLA:CPU runs each small matmul of a recurrent step (``[64, 128] @ [128, 128]``) on one
thread, so a recurrent model trains on one core of a multi-core CPU. Exposing the cores
as separate XLA host devices (``--xla_force_host_platform_device_count``) lets the
training loop's data-parallel sharding (``jax.sharding``, see :mod:`jaxseq.train`) run a
slice of every batch on each core. On this project's 2-core machine that is 1.4-1.5x
the samples/s of one device for the MNIST models (``docs/performance.md``).

The flag only shapes the *host* platform: on a GPU or TPU machine JAX still computes on
the accelerators, and nothing changes. It must be set before JAX starts its backends,
hence a function the scripts call first thing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from jaxseq.checks import check_positive_int

#: The XLA flag that splits the host CPU into several JAX devices.
CPU_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def default_cpu_devices(batch_size: int) -> int:
    """The largest divisor of ``batch_size`` not above the number of usable CPU cores.

    A data-parallel batch must split evenly across devices, so this is the most CPU
    devices a run with this batch size can use (e.g. 2 for batch 64 on 2 cores; 1 for
    an odd batch size).

    Args:
      batch_size: the training batch size (positive).

    Returns:
      The device count, between 1 and the number of cores this process may run on
      (``os.sched_getaffinity``, else ``os.cpu_count()``).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(d for d in range(1, max(1, cores) + 1) if batch_size % d == 0)


def set_cpu_devices(count: int) -> int:
    """Expose the host CPU to JAX as ``count`` devices (before JAX starts its backends).

    An explicit ``--xla_force_host_platform_device_count`` already in ``XLA_FLAGS`` wins
    and is left alone. ``count=1`` changes nothing (one CPU device is JAX's default).

    Args:
      count: the number of CPU devices wanted, e.g. :func:`default_cpu_devices`.

    Returns:
      The device count that will be used for the CPU: ``count``, or the one already in
      ``XLA_FLAGS``.

    Raises:
      ValueError: if ``count`` is not a positive integer.
      RuntimeError: if JAX's backends are already initialised (too late to change).
    """
    check_positive_int("the CPU device count", count)
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in flags.split():
        if flag.startswith(CPU_DEVICES_FLAG + "="):
            return int(flag.split("=", 1)[1])
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
    """Start JAX for an experiment: split the CPU into devices, then join other hosts.

    Call it before any JAX computation. The CPU device count changes the order of float
    sums, so a run records it (``config.json``) and resuming or re-scoring passes it back
    to reproduce the run's numbers exactly.

    Args:
      cpu_devices: CPU devices wanted (:func:`set_cpu_devices`), or ``None`` for
        :func:`default_cpu_devices` of ``batch_size``. No effect on a GPU or TPU.
      batch_size: the training batch size, for the default.
      distributed: join a multi-process run (several hosts) through
        :func:`jaxseq.runs.distributed.initialize`: the coordinator, process count and
        id are detected from the cluster (SLURM, Open MPI...) unless given below.
      log: receives a note when JAX was already running with another device count.
      coordinator_address, num_processes, process_id: explicit multi-process settings
        (all three or none; giving them implies ``distributed``), e.g.
        ``"127.0.0.1:12345", 2, 0`` for two processes on one machine.
      heartbeat_timeout: seconds without a heartbeat after which a process counts as
        dead and the others stop (default
        :data:`jaxseq.runs.distributed.HEARTBEAT_TIMEOUT_S`).

    Returns:
      The CPU device count in use (where JAX already ran in this process, e.g. a test
      calling a script's ``main``, the count it has).

    Raises:
      ValueError: for inconsistent multi-process settings, or if
        ``jax.distributed.initialize()`` fails (the message says why; one line).
    """
    # --- several processes (jaxseq.runs.distributed): checked before JAX starts ---
    from jaxseq.runs import distributed as multi

    explicit = (coordinator_address, num_processes, process_id)
    multi_settings = None
    if distributed or any(v is not None for v in explicit):
        timeouts = {} if heartbeat_timeout is None else {"heartbeat_timeout": heartbeat_timeout}
        try:
            multi_settings = multi.Settings(*explicit, **timeouts)
        except ValueError as error:
            raise ValueError(f"--distributed: {error}") from None
    # --- end of several processes ---
    import jax

    if cpu_devices is None:
        cpu_devices = default_cpu_devices(batch_size)
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
