"""The OpenAI-compatible routing gateway: an HTTP front for a deployed router and its pool."""
