"""Datasets: registry and fetch, readers, preprocessing, leave-one-out batching."""

from dnsrec_edge.data.dataset import Dataset
from dnsrec_edge.data.load import load_dataset

__all__ = ["Dataset", "load_dataset"]
