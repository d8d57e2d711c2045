"""UniRoute: cost-aware routing of LLM requests that generalises to unseen LLMs."""

__version__ = "0.1.0"
