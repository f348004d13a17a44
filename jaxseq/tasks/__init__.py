"""Tasks: each a data module, a frozen ``Config`` and ``run(config, run_dir)``.

* :mod:`jaxseq.tasks.mnist`: sequential MNIST, row by row, with the recurrent classifiers;
* :mod:`jaxseq.tasks.adder`: binary addition with the full-adder cell.

The experiment scripts in ``experiments/`` turn flags into a task's ``Config``, call its
``run`` and print; a new task (a copy task, pixel-by-pixel MNIST...) gets a folder here of
the same shape.
"""
