"""The study's PyTorch model, trained in PyTorch, scored here after converting its weights.

    python experiments/pytorch_weights.py --cell gru --epochs 1

Trains the reference study's PyTorch classifier (``nn.RNN``/``nn.LSTM``/``nn.GRU``,
``batch_first``, hidden 128, a ``Linear`` head on ``out[:, -1]``, Adam 1e-3, batch 64) on the
same 48,000 training images jaxseq uses (``jaxseq.data.mnist.load_splits``), scores it
on the 10,000 test images in PyTorch, converts its ``state_dict`` with
``jaxseq.nn.torch_weights.params_from_torch`` and scores the converted
``RecurrentClassifier`` with ``jaxseq.train.evaluate``. Needs the ``torch`` extra. Prints
both test accuracies and the largest logit difference; exit 1 if the accuracies differ.
"""

from __future__ import annotations

import sys

from jaxseq.app import cli
from jaxseq.nn.registry import CELLS


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="pytorch_weights.py", description=__doc__.split("\n\n")[0],
                                formatter_class=cli.HelpFormatter)
    parser.add_argument("--cell", default="gru", choices=list(CELLS), help="recurrent cell")
    parser.add_argument("--bidirectional", action="store_true", help="bidirectional layer")
    parser.add_argument("--epochs", type=cli.positive_int, default=1, help="PyTorch epochs")
    parser.add_argument("--data-dir", type=cli.path, default=None,
                        help="MNIST folder (default: $JAXSEQ_DATA_DIR, then the cache)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        parser.error("needs PyTorch: pip install -e \".[torch]\"")
    import jax
    import numpy as np

    from jaxseq.data import Dataset
    from jaxseq.data.mnist import load_splits
    from jaxseq.nn.classifier import RecurrentClassifier
    from jaxseq.nn.torch_weights import params_from_torch
    from jaxseq.train import TrainState, evaluate

    try:
        splits = load_splits(args.data_dir, seed=0)
    except (FileNotFoundError, ValueError) as error:
        cli.fail(parser.prog, cli.for_command_line(str(error), parser), 2)
    torch.manual_seed(0)
    layer = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[args.cell]

    class Study(torch.nn.Module):  # the reference study's model
        def __init__(self):
            super().__init__()
            self.rnn = layer(28, 128, batch_first=True, bidirectional=args.bidirectional)
            self.fc = torch.nn.Linear(256 if args.bidirectional else 128, 10)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1, :])

    model = Study()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.from_numpy(splits.train.inputs), torch.from_numpy(splits.train.labels).long()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x) - 63, 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
        print(f"PyTorch epoch {epoch + 1}: last batch loss {loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(splits.test.inputs)).numpy()
    torch_accuracy = float((torch_logits.argmax(-1) == splits.test.labels).mean())

    params = params_from_torch(model.state_dict(), cell=args.cell,
                               bidirectional=args.bidirectional, rnn_prefix="rnn")
    ours = RecurrentClassifier(cell=args.cell, features=128, bidirectional=args.bidirectional)
    state = TrainState.create(apply_fn=ours.apply, params=params, tx=_no_optimizer())
    scores = evaluate(state, Dataset(splits.test.inputs, splits.test.labels))
    logits = np.asarray(jax.jit(ours.apply)({"params": params}, splits.test.inputs[:1000]))
    gap = float(np.abs(logits - torch_logits[:1000]).max())
    print(f"test accuracy: PyTorch {100 * torch_accuracy:.2f}%, jaxseq (converted weights) "
          f"{100 * scores['accuracy']:.2f}%; largest logit difference on 1,000 test images "
          f"{gap:.2e}")
    same = round(torch_accuracy * 10_000) == round(scores["accuracy"] * 10_000)
    return 0 if same else 1


def _no_optimizer():
    import optax

    return optax.set_to_zero()  # evaluation needs a TrainState, not an optimizer


if __name__ == "__main__":
    sys.exit(cli.run_main(main, "pytorch_weights.py"))
