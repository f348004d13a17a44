"""Sequential MNIST, row by row: train recurrent classifiers and score them on the test set.

Each 28x28 image is read as 28 time steps of 28 pixels; the classifier's logits
come from the recurrent output at the last step. Defaults are the reference
study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs, 80/20 split.

    python experiments/mnist.py --cell gru
    python experiments/mnist.py --cell all            # rnn, lstm and gru in one run
    python experiments/mnist.py --cell lstm --bidirectional
    python experiments/mnist.py --cell gru --epochs 1 --train-subset 4800   # quick look
    python experiments/mnist.py --resume runs/mnist-gru-20250101-120000   # continue a run
    python experiments/mnist.py --eval-only runs/mnist-gru-20250101-120000  # re-score it

Every epoch ends with a checkpoint in RUN_DIR/checkpoints/<model>/<epoch>/ (see
jaxseq.checkpoint); ``--log-dir DIR`` also writes TensorBoard event files to DIR/<model>/.
Exit codes: 0 done; 1 --eval-only found a test accuracy other than
the saved one; 2 bad flags, data or run folder (one line on stderr); 3 training
stopped on a non-finite loss (the last good checkpoint is kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# Only light imports (no JAX) until the flags and the data are checked, so that bad input
# fails fast; JAX, Flax and orbax are imported by the functions that train and evaluate.
from jaxseq import io
from jaxseq.cli import (
    ArgumentParser,
    add_run_flags,
    ensure_new_run_dir,
    explicit_flags,
    fail,
    make_run_dir,
    metric_writer_factory,
    positive_float,
    positive_int,
    refuse_other_flags,
    restore_error,
    run_main,
    saved_settings,
    seed_int,
)
from jaxseq.data import mnist

CELLS = ("gru", "lstm", "rnn")  # the keys of jaxseq.models.CELLS (checked by the tests)
#: Flags that may be given with --resume / --eval-only (the rest come from config.json).
RESUME_FLAGS = {"data_dir", "no_progress", "keep_checkpoints", "distributed", "log_dir",
                "log_every_steps"}
EVAL_ONLY_FLAGS = {"data_dir", "distributed"}
#: What a run writes into its folder (removed with --overwrite, with checkpoints/).
OUTPUTS = ("config.json", "summary.json", "*_results.json", "*_accuracy.png", "*_loss.png",
           "comparison.png")
#: Settings read back from config.json by --resume.
SETTINGS = ("cell", "bidirectional", "hidden_size", "num_layers", "epochs", "batch_size",
            "learning_rate", "seed", "data_dir", "train_subset", "keep_checkpoints",
            "cpu_devices")
EXIT_DIVERGED = 3


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm", choices=[*CELLS, "all"],
                        help="recurrent cell; 'all' trains rnn, lstm and gru in turn")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--hidden-size", type=positive_int, default=128)
    parser.add_argument("--num-layers", type=positive_int, default=1)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64,
                        help="examples per step; a multiple of the number of devices")
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seeds the split, the initialisation and the shuffles")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the four MNIST IDX files (default: $JAXSEQ_DATA_DIR, "
                             "else ~/.cache/jaxseq/mnist, downloading there if needed)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="run folder (default: a new folder under runs/)")
    parser.add_argument("--train-subset", type=positive_int, default=None,
                        help="train on the first N shuffled training images only (quick runs)")
    add_run_flags(parser, unit="model",
                  resume_with="--data-dir, --no-progress, --keep-checkpoints, --distributed, "
                              "--log-dir, --log-every-steps")
    parser.add_argument("--eval-only", type=Path, default=None, metavar="RUN_DIR",
                        help="re-score the saved model(s) of RUN_DIR on the test set and "
                             "check the saved test accuracy; combinable only with --data-dir "
                             "and --distributed")
    parser.add_argument("--cpu-devices", type=positive_int, default=None,
                        help="on a CPU, split it into this many JAX devices so that data "
                             "parallelism uses every core (default: the largest divisor of "
                             "--batch-size up to the number of cores; 1 turns it off; no "
                             "effect on GPU/TPU)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.parser = parser
    if args.resume is not None and args.eval_only is not None:
        parser.error("--resume and --eval-only cannot be combined")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if args.resume is not None:
        refuse_other_flags(parser, argv, "--resume", RESUME_FLAGS)
        load_saved_settings(parser, args, argv, args.resume)
    elif args.eval_only is not None:
        refuse_other_flags(parser, argv, "--eval-only", EVAL_ONLY_FLAGS)
        config = read_run_config(parser, args.eval_only, "--eval-only")
        if args.data_dir is None and config.get("data_dir"):
            args.data_dir = Path(config["data_dir"])
        args.seed = config.get("seed", 0)
        args.cpu_devices = config.get("cpu_devices", 1)  # the run's own device count
    elif args.out_dir is not None:
        ensure_new_run_dir(parser, args.out_dir, args.overwrite, OUTPUTS)
    args.metric_writer = metric_writer_factory(parser, args)  # TensorBoard: DIR/<model>
    return args


def read_run_config(parser: argparse.ArgumentParser, run_dir: Path, flag: str) -> dict:
    """The config.json of a run folder, or a one-line error."""
    if not run_dir.is_dir():
        parser.error(f"{flag}: run folder {run_dir} does not exist")
    path = run_dir / "config.json"
    if not path.is_file():
        parser.error(f"{flag}: {run_dir} holds no config.json, so it is not a run folder of "
                     f"{parser.prog}")
    try:
        return io.read_json(path)
    except (OSError, ValueError) as error:
        parser.error(f"{flag}: cannot read {path}: {error}")


def load_saved_settings(parser: argparse.ArgumentParser, args: argparse.Namespace,
                        argv: list[str] | None, run_dir: Path) -> None:
    """Fill ``args`` from RUN_DIR/config.json for --resume (given flags win where allowed)."""
    config = read_run_config(parser, run_dir, "--resume")
    if not io.checkpoint_names(run_dir):
        parser.error(f"--resume: {run_dir} holds no checkpoint to resume from (the run stopped "
                     f"before its first epoch ended); start it again with --out-dir {run_dir} "
                     f"--overwrite")
    if (run_dir / "summary.json").is_file():
        parser.error(f"--resume: {run_dir} is a finished run (summary.json exists); nothing to "
                     f"resume; use --eval-only {run_dir} to re-score it")
    given = explicit_flags(parser, argv)
    saved = saved_settings(parser, config, SETTINGS, "--resume", optional=("cpu_devices",))
    for key, value in saved.items():
        if key not in given:
            setattr(args, key, Path(value) if key == "data_dir" and value is not None else value)
    args.out_dir = run_dir


def run_name(cell: str, bidirectional: bool) -> str:
    return ("bi" if bidirectional else "") + cell


def train_one(cell: str, args: argparse.Namespace, splits: mnist.MNISTSplits) -> dict:
    """Train one classifier (or continue it from its checkpoint with --resume); return its
    config, history and test metrics."""
    import jax

    from jaxseq import plots
    from jaxseq.checkpoint import Checkpointer
    from jaxseq.models import RecurrentClassifier
    from jaxseq.train import NonFiniteLossError, create_train_state, evaluate, fit

    name = run_name(cell, args.bidirectional)
    model = RecurrentClassifier(cell=cell, features=args.hidden_size,
                                num_layers=args.num_layers, bidirectional=args.bidirectional)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(args.seed))
    state = create_train_state(model, init_rng, splits.train.inputs[:1], args.learning_rate)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"\n== {name}: {num_params:,} parameters")
    initial_epoch, history = 0, None
    writer = args.metric_writer(name, jax.process_index() == 0)
    with Checkpointer(io.checkpoint_dir(args.out_dir, name), keep=args.keep_checkpoints,
                      model=model, example_inputs=splits.train.inputs[:1]) as checkpointer:
        if args.resume is not None and checkpointer.latest_epoch() is not None:
            try:
                restored = checkpointer.restore(state)
            except (ValueError, KeyError, OSError) as error:  # orbax / tensorstore errors
                restore_error(args.parser.prog, checkpointer.directory, error)
            state, shuffle_rng = restored.state, restored.rng
            initial_epoch, history = restored.epoch, restored.history
            print(f"resuming {name} after epoch {initial_epoch} from {checkpointer.directory}")
        try:
            state, history = fit(state, splits.train, splits.validation, epochs=args.epochs,
                                 batch_size=args.batch_size, rng=shuffle_rng,
                                 progress=not args.no_progress, initial_epoch=initial_epoch,
                                 history=history,
                                 on_epoch_end=checkpointer.on_epoch_end(shuffle_rng),
                                 metric_writer=writer, log_every_steps=args.log_every_steps)
        except NonFiniteLossError as error:
            last = checkpointer.latest_epoch()
            kept = (f"the last good checkpoint, epoch {last}, is kept in "
                    f"{checkpointer.directory}" if last is not None
                    else "no checkpoint had been saved yet")
            fail(args.parser.prog, f"{name}: {error}; training stopped, {kept}", EXIT_DIVERGED)
        finally:
            if writer is not None:
                writer.close()
    test = evaluate(state, splits.test)
    print(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss {test['loss']:.4f})")

    result = {"model": name, "num_params": num_params, "history": history,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "mean_epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"])}
    if jax.process_index() == 0:
        plots.plot_history(history, "accuracy", args.out_dir / f"{name}_accuracy.png",
                           title=f"{name}: training and validation accuracy")
        plots.plot_history(history, "loss", args.out_dir / f"{name}_loss.png",
                           title=f"{name}: training and validation loss")
        io.write_json_atomic(args.out_dir / f"{name}_results.json", result)
    return result


def eval_only(args: argparse.Namespace) -> int:
    """Re-score every saved model of a run on the test set; compare with its results."""
    run_dir, parser = args.eval_only, args.parser
    names = io.checkpoint_names(run_dir)
    if not names:
        parser.error(f"--eval-only: {run_dir} holds no checkpoint")
    try:
        test_set = mnist.load_splits(args.data_dir, seed=args.seed).test
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    start_jax(args)
    from jaxseq.checkpoint import load_run

    mismatches = 0
    for name in names:
        try:
            predictor = load_run(run_dir, name)
        except (FileNotFoundError, ValueError) as error:
            parser.error(f"--eval-only: {error}")
        test = predictor.evaluate(test_set)
        print(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss "
              f"{test['loss']:.4f}), model after epoch {predictor.epoch}")
        results_path = run_dir / f"{name}_results.json"
        if not results_path.is_file():
            print(f"{name}: no {results_path.name} (unfinished run), nothing to compare")
            continue
        saved = io.read_json(results_path)
        if (saved["test_accuracy"], saved["test_loss"]) == (test["accuracy"], test["loss"]):
            print(f"{name}: equals the saved test accuracy and loss in {results_path.name}")
        else:
            mismatches += 1
            print(f"{name}: DIFFERS from {results_path.name}: saved test accuracy "
                  f"{100 * saved['test_accuracy']:.2f}% (loss {saved['test_loss']:.4f})")
    return 1 if mismatches else 0


def start_jax(args: argparse.Namespace):
    """Import JAX; with --distributed, join the other hosts first. Returns the module.

    First exposes the CPU as ``--cpu-devices`` devices (see :mod:`jaxseq.runtime`); the
    count is saved in config.json, so --resume and --eval-only reuse it and reproduce
    the run's numbers exactly (a different count changes the order of float sums).
    """
    import jax

    from jaxseq import runtime

    if args.cpu_devices is None:
        args.cpu_devices = runtime.default_cpu_devices(args.batch_size)
    try:
        args.cpu_devices = runtime.set_cpu_devices(args.cpu_devices)  # XLA_FLAGS may win
    except RuntimeError:
        # JAX already started in this process (main() called from Python, as the tests
        # do): its devices stay as they are, and the config records what is used.
        if jax.default_backend() == "cpu" and jax.device_count() != args.cpu_devices:
            print(f"note: JAX is already running on {jax.device_count()} CPU device(s); "
                  f"--cpu-devices {args.cpu_devices} is not applied")
            args.cpu_devices = jax.device_count()

    if args.distributed:
        try:
            jax.distributed.initialize()
        except (ValueError, RuntimeError) as error:
            args.parser.error(f"--distributed: jax.distributed.initialize() failed: {error}")
    return jax


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parser = args.parser
    if args.eval_only is not None:
        return eval_only(args)
    cells = ["rnn", "lstm", "gru"] if args.cell == "all" else [args.cell]
    try:
        splits = mnist.load_splits(args.data_dir, seed=args.seed, train_subset=args.train_subset)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if args.batch_size > splits.train.num_examples:
        parser.error(f"--batch-size {args.batch_size} is larger than the training set "
                     f"({splits.train.num_examples} examples)")
    jax = start_jax(args)
    if args.batch_size % jax.device_count():
        parser.error(f"--batch-size {args.batch_size} must be a multiple of the number of "
                     f"devices ({jax.device_count()})")

    if args.resume is not None:
        config = io.read_json(args.out_dir / "config.json")
        print(f"resuming the run in {args.out_dir}")
    else:
        args.out_dir = (make_run_dir(parser, args.out_dir) if args.out_dir
                        else io.new_run_dir("runs", f"mnist-{args.cell}"))
        config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                  if k not in ("parser", "resume", "eval_only", "overwrite", "metric_writer")}
        config.update(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                      process_count=jax.process_count(),
                      train_examples=splits.train.num_examples,
                      validation_examples=splits.validation.num_examples,
                      test_examples=splits.test.num_examples)
        if jax.process_index() == 0:
            io.write_json_atomic(args.out_dir / "config.json", config)
    print(json.dumps(config, indent=2))

    start = time.perf_counter()
    results = {cell: train_one(cell, args, splits) for cell in cells}
    from jaxseq import plots

    summary = {r["model"]: {"test_accuracy": r["test_accuracy"],
                            "mean_epoch_seconds": r["mean_epoch_seconds"]}
               for r in results.values()}
    if jax.process_index() == 0:
        if len(results) > 1:
            plots.plot_comparison({r["model"]: r["history"] for r in results.values()},
                                  args.out_dir / "comparison.png",
                                  title="sequential MNIST: validation curves per cell")
        io.write_json_atomic(args.out_dir / "summary.json",
                             {"config": config, "results": summary,
                              "resumed": args.resume is not None,
                              "total_seconds": time.perf_counter() - start})
    print("\nmodel      test accuracy   s/epoch")
    for name, r in summary.items():
        print(f"{name:10s} {100 * r['test_accuracy']:12.2f}%  {r['mean_epoch_seconds']:8.1f}")
    print(f"results in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "mnist.py"))
