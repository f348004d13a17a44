"""Data: MNIST as row-by-row sequences and the binary-addition generator."""

from jaxseq.data.dataset import Dataset

__all__ = ["Dataset"]
