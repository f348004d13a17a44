"""Sequential MNIST classified by a recurrent model: :class:`~jaxseq.tasks.mnist.task.MnistConfig`,
:func:`~jaxseq.tasks.mnist.task.run` and :func:`~jaxseq.tasks.mnist.rescore.evaluate_run`; the
files, pre-processing and pixel orders are in :mod:`jaxseq.data`."""
