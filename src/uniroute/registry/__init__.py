"""The model registry: stored model records, their scores and prices, and the default policy."""
