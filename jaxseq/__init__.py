"""jaxseq: recurrent sequence models in JAX/Flax with one jitted optax training loop."""

__version__ = "0.2.0"
