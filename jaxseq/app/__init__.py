"""The application above the library: the experiment scripts' command lines, exit codes,
signals, run-folder locks, memory checks and JAX start-up (see ``docs/guide.md``)."""
