"""Sequential MNIST, row by row: 28 time steps of 28 pixels, classified by a recurrent model.

* :mod:`jaxseq.tasks.mnist.data`: the files, pre-processing and splits (no JAX);
* :mod:`jaxseq.tasks.mnist.task`: :class:`~jaxseq.tasks.mnist.task.MnistConfig`,
  :func:`~jaxseq.tasks.mnist.task.run` and
  :func:`~jaxseq.tasks.mnist.task.evaluate_run`.
"""
