"""PyTorch's side of ``benchmarks/throughput.py``: the study's model, trained three ways.

Run by ``throughput.py`` as a child process (it never imports JAX, so JAX's threads and
GPU memory pool stay out of its way)::

    python benchmarks/torch_baseline.py '{"cell": "lstm", "bidirectional": false,
        "batch_size": 64, "steps": 200, "repeats": 5, "device": "cuda"}'

prints one JSON object (see :func:`run`) on stdout.

The model is the reference study's: ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` (``batch_first``,
128 hidden units, one layer, optionally bidirectional) and a ``Linear`` head on
``out[:, -1]``, ``CrossEntropyLoss``, ``Adam`` with learning rate 1e-3; inputs
``[batch, time, features]`` float32 (normal noise: the speed does not depend on the values),
labels ``[batch]`` int64 in 0..9. cuDNN is left enabled (``torch.backends.cudnn.enabled``).

The modes (``MODES``), each on a fresh model seeded the same way:

* ``eager_dataloader``, "eager + DataLoader": the study's way. A ``DataLoader``
  (``shuffle=True``, no workers, no pinned memory) over a ``TensorDataset`` held on the
  host; each batch is moved to the device (``.to(device)``) before its step.
* ``eager_device``, "eager, data on device": the whole data set on the device, batch ``k``
  the contiguous slice ``[k * batch, (k + 1) * batch)`` (a view, no copy). On a CPU this is
  exactly what ``throughput.py`` measured before the modes existed, so its CPU ratios stay
  comparable.
* ``cuda_graph``, "CUDA graph": the whole training step (forward, loss, backward,
  ``Adam(capturable=True)`` step) captured once as one CUDA graph after a warm-up on a side
  stream, then replayed; each step first copies its batch (on the device) into the graph's
  static input tensors. The recipe is PyTorch's "whole-network capture"
  (https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs). Only on CUDA: on a CPU the
  mode is recorded as not applicable, never estimated.

Timing: one untimed warm-up epoch per mode (``steps`` batches), then ``repeats`` timed
epochs; ``torch.cuda.synchronize()`` before the clock starts and before it stops, so
queued GPU work is counted. ``train_samples_per_s`` is ``steps * batch_size`` over the
median epoch time (seconds).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time

MODES = ("eager_dataloader", "eager_device", "cuda_graph")
MODE_LABELS = {
    "eager_dataloader": "eager + DataLoader",
    "eager_device": "eager, data on device",
    "cuda_graph": "CUDA graph",
}
HIDDEN = 128
CLASSES = 10


def cpu_name() -> str:
    """The host CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_model(torch, cell: str, bidirectional: bool, features: int, device):
    layer_cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = layer_cls(features, HIDDEN, batch_first=True,
                                 bidirectional=bidirectional)
            self.fc = torch.nn.Linear(HIDDEN * (2 if bidirectional else 1), CLASSES)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1, :])

    torch.manual_seed(0)
    return Model().to(device)


def _time_epochs(torch, device, epoch, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``epoch()``, after one untimed call."""
    epoch()
    times = []
    for _ in range(repeats):
        _sync(torch, device)
        start = time.perf_counter()
        epoch()
        _sync(torch, device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _eager(torch, model, x, y, batch_size: int, steps: int, repeats: int, device,
           dataloader: bool) -> tuple[float, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    last = {}

    def step(xb, yb):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        last["loss"] = loss

    if dataloader:
        from torch.utils.data import DataLoader, TensorDataset

        generator = torch.Generator().manual_seed(0)
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                            drop_last=True, generator=generator)

        def epoch():
            for xb, yb in loader:
                step(xb.to(device), yb.to(device))
    else:
        xd = x.to(device).view(steps, batch_size, *x.shape[1:])
        yd = y.to(device).view(steps, batch_size)

        def epoch():
            for k in range(steps):
                step(xd[k], yd[k])

    seconds = _time_epochs(torch, device, epoch, repeats)
    return seconds, float(last["loss"])


def _cuda_graph(torch, model, x, y, batch_size: int, steps: int, repeats: int,
                device) -> tuple[float, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    loss_fn = torch.nn.CrossEntropyLoss()
    xd = x.to(device).view(steps, batch_size, *x.shape[1:])
    yd = y.to(device).view(steps, batch_size)
    static_x = xd[0].clone()
    static_y = yd[0].clone()

    # Warm-up on a side stream (cuDNN/cuBLAS handles, workspaces, Adam's state), then
    # capture on that same stream; grads are None before capture so that backward()
    # allocates them from the graph's private pool.
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for k in range(3):
            static_x.copy_(xd[k % steps])
            static_y.copy_(yd[k % steps])
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(static_x), static_y).backward()
            optimizer.step()
    torch.cuda.current_stream(device).wait_stream(stream)
    _sync(torch, device)

    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph, stream=stream):
        static_loss = loss_fn(model(static_x), static_y)
        static_loss.backward()
        optimizer.step()
    _sync(torch, device)

    def epoch():
        for k in range(steps):
            static_x.copy_(xd[k])
            static_y.copy_(yd[k])
            graph.replay()

    seconds = _time_epochs(torch, device, epoch, repeats)
    return seconds, float(static_loss)


def run(cell: str, bidirectional: bool, batch_size: int, steps: int, repeats: int,
        device: str = "cpu", modes: list[str] | tuple[str, ...] = MODES,
        time_steps: int = 28, features: int = 28) -> dict:
    """Train the study's model in each of ``modes`` and report samples/s.

    Args:
      cell: ``"rnn"``, ``"lstm"`` or ``"gru"``.
      bidirectional: two directions, head on ``2 * 128`` features.
      batch_size, steps, repeats: batches of ``batch_size`` per epoch (``steps``), timed
        epochs (``repeats``, median taken), all positive.
      device: ``"cuda"`` or ``"cpu"``.
      modes: a subset of :data:`MODES`.
      time_steps, features: the input shape ``[batch, time_steps, features]``.

    Returns:
      ``{"torch_version", "cuda_version", "cudnn_version", "cudnn_enabled",
      "float32_matmul_precision", "cudnn_allow_tf32", "device", "device_name", "threads",
      "modes": {mode: {"label", "train_samples_per_s", "final_loss"} or
      {"label", "not_applicable": reason}}, "fastest_mode", "train_samples_per_s"}``;
      the last two are the fastest measured mode and its samples/s (``None`` if none ran).

    Raises:
      ValueError: for an unknown cell, mode or device, or non-positive sizes.
      RuntimeError: ``device="cuda"`` when PyTorch sees no CUDA device.
    """
    import torch

    if cell not in ("rnn", "lstm", "gru"):
        raise ValueError(f"cell must be rnn, lstm or gru, got {cell!r}")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown PyTorch mode(s) {unknown}; allowed: {list(MODES)}")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    for name, value in (("batch_size", batch_size), ("steps", steps), ("repeats", repeats),
                        ("time_steps", time_steps), ("features", features)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("JAX runs on a GPU but PyTorch sees no CUDA device "
                           "(torch.cuda.is_available() is False): install a CUDA build of "
                           "PyTorch or pass --no-torch")
    torch.backends.cudnn.enabled = True
    dev = torch.device(device)
    try:
        cudnn_tf32 = bool(torch.backends.cudnn.allow_tf32)
    except Exception:  # noqa: BLE001 - a renamed flag must not stop the benchmark
        cudnn_tf32 = None
    info = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
        else None,
        "cudnn_enabled": bool(torch.backends.cudnn.enabled),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": cudnn_tf32,
        "device": device,
        "device_name": torch.cuda.get_device_name(dev) if device == "cuda" else cpu_name(),
        "threads": torch.get_num_threads(),
    }
    torch.manual_seed(0)
    n = steps * batch_size
    x = torch.randn(n, time_steps, features)
    y = torch.randint(0, CLASSES, (n,))
    results = {}
    for mode in modes:
        entry = {"label": MODE_LABELS[mode]}
        if mode == "cuda_graph" and device != "cuda":
            entry["not_applicable"] = "CUDA graphs need a CUDA device; this run used the CPU"
            results[mode] = entry
            continue
        model = _make_model(torch, cell, bidirectional, features, dev)
        if mode == "cuda_graph":
            seconds, loss = _cuda_graph(torch, model, x, y, batch_size, steps, repeats, dev)
        else:
            seconds, loss = _eager(torch, model, x, y, batch_size, steps, repeats, dev,
                                   dataloader=mode == "eager_dataloader")
        entry["train_samples_per_s"] = n / seconds
        entry["final_loss"] = loss
        results[mode] = entry
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    measured = {m: e["train_samples_per_s"] for m, e in results.items()
                if "train_samples_per_s" in e}
    fastest = max(measured, key=measured.get) if measured else None
    return {**info, "modes": results, "fastest_mode": fastest,
            "train_samples_per_s": measured[fastest] if fastest else None}


if __name__ == "__main__":
    print(json.dumps(run(**json.loads(sys.argv[1]))))
