"""The OpenAI-compatible API: request models (``protocol``), routing policies (``policy``) and
the handlers of ``/v1`` (``routes``)."""
