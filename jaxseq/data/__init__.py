"""Data without JAX: :class:`Dataset`, the dataset catalogue, downloads, IDX files, MNIST
and its pixel orders."""

from jaxseq.data.dataset import Dataset

__all__ = ["Dataset"]
