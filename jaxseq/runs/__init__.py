"""Runs: run folders, checkpoints, inference from a saved run, and the command-line helpers.

* :mod:`jaxseq.runs.folder`: atomic JSON files, new run folders, the checkpoint folders of
  a run (no JAX);
* :mod:`jaxseq.runs.checkpoint`: per-epoch orbax checkpoints for exact resuming;
* :mod:`jaxseq.runs.predictor`: :func:`~jaxseq.runs.predictor.load_run` for inference;
* :mod:`jaxseq.runs.cli`: what both experiment scripts share on the command line (no JAX).
"""
