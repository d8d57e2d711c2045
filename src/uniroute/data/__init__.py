"""Routing data: the RoutingDataset type, loaders for published formats, and seeded splits."""

from uniroute.data.dataset import DataError, RoutingDataset

__all__ = ["DataError", "RoutingDataset"]
