"""Sequential MNIST, row by row: 28 time steps of 28 pixels, classified by a recurrent model.

* :mod:`jaxseq.data.mnist` and :mod:`jaxseq.data.orders`: the files, pre-processing,
  splits and pixel orders (no JAX);
* :mod:`jaxseq.tasks.mnist.task`: :class:`~jaxseq.tasks.mnist.task.MnistConfig`,
  :func:`~jaxseq.tasks.mnist.task.run` and
  :func:`~jaxseq.tasks.mnist.task.evaluate_run`.
"""
