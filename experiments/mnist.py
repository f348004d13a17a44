"""Sequential MNIST, row by row: train recurrent classifiers and score them on the test set.

Each 28x28 image is read as 28 time steps of 28 pixels; the classifier's logits
come from the recurrent output at the last step. Defaults are the reference
study's: hidden 128, 1 layer, Adam 1e-3, batch 64, 10 epochs, 80/20 split.

    python experiments/mnist.py --cell gru
    python experiments/mnist.py --cell all            # rnn, lstm and gru in one run
    python experiments/mnist.py --cell lstm --bidirectional
    python experiments/mnist.py --cell gru --epochs 1 --train-subset 4800   # quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax

from jaxseq import io, plots
from jaxseq.cli import ArgumentParser, positive_float, positive_int
from jaxseq.data import mnist
from jaxseq.models import CELLS, RecurrentClassifier
from jaxseq.train import create_train_state, evaluate, fit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="lstm", choices=[*sorted(CELLS), "all"],
                        help="recurrent cell; 'all' trains rnn, lstm and gru in turn")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--hidden-size", type=positive_int, default=128)
    parser.add_argument("--num-layers", type=positive_int, default=1)
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the split, the initialisation and the shuffles")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with the four MNIST IDX files (default: $JAXSEQ_DATA_DIR, "
                             "else ~/.cache/jaxseq/mnist, downloading there if needed)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="run folder (default: a new folder under runs/)")
    parser.add_argument("--train-subset", type=positive_int, default=None,
                        help="train on the first N shuffled training images only (quick runs)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a folder")
    if args.out_dir is not None and args.out_dir.exists() and any(args.out_dir.iterdir()):
        parser.error(f"--out-dir {args.out_dir} already holds files; choose a new folder")
    args.parser = parser
    return args


def run_name(cell: str, bidirectional: bool) -> str:
    return ("bi" if bidirectional else "") + cell


def train_one(cell: str, args: argparse.Namespace, splits: mnist.MNISTSplits) -> dict:
    """Train one classifier; return its config, history and test metrics."""
    name = run_name(cell, args.bidirectional)
    model = RecurrentClassifier(cell=cell, features=args.hidden_size,
                                num_layers=args.num_layers, bidirectional=args.bidirectional)
    init_rng, shuffle_rng = jax.random.split(jax.random.key(args.seed))
    state = create_train_state(model, init_rng, splits.train.inputs[:1], args.learning_rate)
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"\n== {name}: {num_params:,} parameters")
    state, history = fit(state, splits.train, splits.validation, epochs=args.epochs,
                         batch_size=args.batch_size, rng=shuffle_rng,
                         progress=not args.no_progress)
    test = evaluate(state, splits.test)
    print(f"{name}: test accuracy {100 * test['accuracy']:.2f}%  (test loss {test['loss']:.4f})")

    plots.plot_history(history, "accuracy", args.out_dir / f"{name}_accuracy.png",
                       title=f"{name}: training and validation accuracy")
    plots.plot_history(history, "loss", args.out_dir / f"{name}_loss.png",
                       title=f"{name}: training and validation loss")
    result = {"model": name, "num_params": num_params, "history": history,
              "test_accuracy": test["accuracy"], "test_loss": test["loss"],
              "mean_epoch_seconds": sum(history["epoch_seconds"]) / len(history["epoch_seconds"])}
    io.write_json_atomic(args.out_dir / f"{name}_results.json", result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parser = args.parser
    cells = ["rnn", "lstm", "gru"] if args.cell == "all" else [args.cell]
    try:
        splits = mnist.load_splits(args.data_dir, seed=args.seed, train_subset=args.train_subset)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    if args.batch_size > splits.train.num_examples:
        parser.error(f"--batch-size {args.batch_size} is larger than the training set "
                     f"({splits.train.num_examples} examples)")

    args.out_dir = args.out_dir or io.new_run_dir("runs", f"mnist-{args.cell}")
    config = {k: (str(v) if isinstance(v, Path) else v)
              for k, v in vars(args).items() if k != "parser"}
    config.update(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                  train_examples=splits.train.num_examples,
                  validation_examples=splits.validation.num_examples,
                  test_examples=splits.test.num_examples)
    print(json.dumps(config, indent=2))
    io.write_json_atomic(args.out_dir / "config.json", config)

    start = time.perf_counter()
    results = {cell: train_one(cell, args, splits) for cell in cells}
    if len(results) > 1:
        plots.plot_comparison({r["model"]: r["history"] for r in results.values()},
                              args.out_dir / "comparison.png",
                              title="sequential MNIST: validation curves per cell")
    summary = {r["model"]: {"test_accuracy": r["test_accuracy"],
                            "mean_epoch_seconds": r["mean_epoch_seconds"]}
               for r in results.values()}
    io.write_json_atomic(args.out_dir / "summary.json",
                         {"config": config, "results": summary,
                          "total_seconds": time.perf_counter() - start})
    print("\nmodel      test accuracy   s/epoch")
    for name, r in summary.items():
        print(f"{name:10s} {100 * r['test_accuracy']:12.2f}%  {r['mean_epoch_seconds']:8.1f}")
    print(f"results in {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
