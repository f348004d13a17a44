"""Sequential MNIST, row by row: 28 time steps of 28 pixels, classified by a recurrent model.

* :mod:`jaxseq.tasks.mnist.config`: :class:`~jaxseq.tasks.mnist.config.MnistConfig`;
* :mod:`jaxseq.tasks.mnist.task`: :func:`~jaxseq.tasks.mnist.task.run` and
  :func:`~jaxseq.tasks.mnist.task.evaluate_run`.
"""
