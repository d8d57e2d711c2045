"""UniRoute: cost-aware routing of LLM requests that generalises to unseen LLMs.

The deployed router is ``uniroute.deployment.Router``; importing this package imports nothing
else, so a command or a test pays only for the layers it uses. docs/ARCHITECTURE.md maps the
packages.
"""

__version__ = "0.1.0"
