"""Runs: run folders, per-epoch checkpoints, the one run session of every task, inference.

* :mod:`jaxseq.runs.session`: :class:`~jaxseq.runs.session.RunSession`, what a run does
  around :func:`jaxseq.train.fit`;
* :mod:`jaxseq.runs.folder`: the folders of a run (no JAX);
* :mod:`jaxseq.runs.checkpoint`, :mod:`jaxseq.runs.interrupt`: orbax checkpoints at every
  epoch and inside one, for exact resuming;
* :mod:`jaxseq.runs.predictor`: :func:`~jaxseq.runs.predictor.load_run` for inference.
"""
