"""Tasks, each a data module, a frozen ``Config`` and ``run(config, run_dir)``:
:mod:`jaxseq.tasks.mnist` (sequential MNIST) and :mod:`jaxseq.tasks.adder` (binary addition).
The experiment scripts turn flags into a task's ``Config`` and call its ``run``."""
