"""Several processes (hosts) in one run: joining them (``jax.distributed.initialize``), and
failing with one line when one of them dies. No JAX import at module level: the scripts
import this before JAX starts.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from typing import NoReturn

from jaxseq.checks import check_positive_int

__all__ = ["EXIT_PEER_FAILED", "HEARTBEAT_TIMEOUT_S", "SHUTDOWN_TIMEOUT_S", "Settings",
           "exit_peer_failed", "free_port", "initialize", "is_peer_failure",
           "peer_failure_message"]

#: Seconds without a heartbeat after which a process counts as dead (JAX's default is 100).
HEARTBEAT_TIMEOUT_S = 60
#: Seconds a process waits at exit for the others to finish too (JAX's default is 300).
SHUTDOWN_TIMEOUT_S = 60
#: Seconds to wait for every process to join at start-up.
INITIALIZATION_TIMEOUT_S = 300
#: Exit status of a script whose run stopped because another process of it failed.
EXIT_PEER_FAILED = 5

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Texts of the errors a process sees when another one of its run died.
_PEER_FAILURE_MARKS = ("Gloo", "heartbeat", "coordination service", "Connection reset by peer",
                       "Connection closed by peer", "Barrier failed", "DEADLINE_EXCEEDED")


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a process joins a multi-process run.

    Attributes:
      coordinator_address: ``HOST:PORT`` of process 0's coordination service; ``None``
        (with the other two) to detect the three from the cluster (SLURM, Open MPI,
        Kubernetes, Cloud TPU).
      num_processes: how many processes the run has (positive).
      process_id: this process's index in ``[0, num_processes)``.
      heartbeat_timeout, shutdown_timeout, initialization_timeout: seconds without a
        heartbeat before a process counts as dead, waited at exit for the others, and
        waited for every process to join.

    Raises:
      ValueError: for settings given in part, or out of range.
    """

    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT_S
    shutdown_timeout: int = SHUTDOWN_TIMEOUT_S
    initialization_timeout: int = INITIALIZATION_TIMEOUT_S

    def __post_init__(self) -> None:
        explicit = (self.coordinator_address, self.num_processes, self.process_id)
        if any(v is not None for v in explicit) and any(v is None for v in explicit):
            raise ValueError("coordinator_address, num_processes and process_id go together: "
                             "give all three, or none for automatic detection")
        if self.coordinator_address is not None:
            host, sep, port = self.coordinator_address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"coordinator_address must be HOST:PORT (port 1-65535), got "
                                 f"{self.coordinator_address!r}")
        if self.num_processes is not None:
            check_positive_int("num_processes", self.num_processes)
            if (isinstance(self.process_id, bool) or not isinstance(self.process_id, int)
                    or not 0 <= self.process_id < self.num_processes):
                raise ValueError(f"process_id must be an integer in [0, num_processes="
                                 f"{self.num_processes}), got {self.process_id!r}")
        for name in ("heartbeat_timeout", "shutdown_timeout", "initialization_timeout"):
            check_positive_int(name, getattr(self, name))

    @property
    def explicit(self) -> bool:
        """Whether the coordinator, process count and id were given (no detection)."""
        return self.coordinator_address is not None

    def bind_address(self) -> str | None:
        """Where process 0's coordinator listens: the coordinator address itself when it
        is a loopback address (one machine: nothing outside it can connect), else
        ``None`` (JAX's default, every interface, needed across hosts)."""
        if self.coordinator_address is None:
            return None
        host = self.coordinator_address.rpartition(":")[0]
        return self.coordinator_address if host in _LOOPBACK else None


def initialize(settings: Settings) -> None:
    """Join the run (Gloo CPU collectives, then ``jax.distributed.initialize``) before JAX
    starts its backends; a ``ValueError`` of one line if JAX cannot (nothing detected,
    coordinator unreachable within ``initialization_timeout``, backends started)."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(heartbeat_timeout_seconds=settings.heartbeat_timeout,
                  shutdown_timeout_seconds=settings.shutdown_timeout,
                  initialization_timeout=settings.initialization_timeout)
    if settings.explicit:
        kwargs.update(coordinator_address=settings.coordinator_address,
                      num_processes=settings.num_processes, process_id=settings.process_id,
                      coordinator_bind_address=settings.bind_address())
    try:
        jax.distributed.initialize(**kwargs)
    except (ValueError, RuntimeError, TypeError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"jax.distributed.initialize() failed: {first}") from error


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on the loopback ``host`` now (it may be taken before use);
    ``ValueError`` for a non-loopback ``host``."""
    if host not in _LOOPBACK:
        raise ValueError(f"free_port probes loopback addresses only, got {host!r}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def is_peer_failure(error: BaseException) -> bool:
    """Whether ``error`` (or its cause) says another process of this multi-process run
    failed: a ``JaxRuntimeError``, or a text naming Gloo, a heartbeat, the coordination
    service, a reset connection or a failed barrier. Always False with one process."""
    if "jax" not in sys.modules:
        return False
    import jax

    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        return False
    seen = set()
    while error is not None and id(error) not in seen:  # orbax may wrap it
        seen.add(id(error))
        if isinstance(error, jax.errors.JaxRuntimeError) or any(
                mark in str(error) for mark in _PEER_FAILURE_MARKS):
            return True
        error = error.__cause__ or error.__context__
    return False


def peer_failure_message(error: BaseException, run_dir: object = None) -> str:
    """One line for a run stopped because another process failed: this process, what JAX
    said (first line) and what to do (``--resume run_dir``, when known)."""
    import jax

    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return (f"process {jax.process_index()} of {jax.process_count()}: another process of "
            f"this run failed or was stopped ({first}); the finished epochs are "
            f"checkpointed: start every process again with --resume {run_dir or 'RUN_DIR'}")


def exit_peer_failed(prog: str, error: BaseException, run_dir: object = None) -> NoReturn:
    """Print :func:`peer_failure_message` and leave with :data:`EXIT_PEER_FAILED` through
    ``os._exit`` (JAX's exit handler would wait at a shutdown barrier the dead process
    never reaches)."""
    print(f"{prog}: error: {peer_failure_message(error, run_dir)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_PEER_FAILED)


#: The multi-process flags' ``dest`` names in the order ``--help`` lists them.
FLAG_ORDER = ("distributed", "coordinator_address", "num_processes", "process_id",
              "heartbeat_timeout")
#: The multi-process flags' ``dest`` names, all allowed with ``--resume`` and ``--eval-only``.
FLAGS = frozenset(FLAG_ORDER)


def start_kwargs(args: object) -> dict:
    """The keyword arguments of :func:`jaxseq.app.runtime.start` from parsed flags."""
    return {name: getattr(args, name) for name in sorted(FLAGS)}


def several_processes(args: object) -> bool:
    """Whether the flags start a multi-process run (``--distributed`` or a coordinator);
    its processes share one run folder, whose lock process 0 takes once JAX started."""
    return bool(getattr(args, "distributed", False)
                or getattr(args, "coordinator_address", None) is not None)
