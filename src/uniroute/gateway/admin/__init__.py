"""The admin API: request models (``protocol``), handlers of ``/admin`` (``routes``) and the
background jobs they start (``jobs``)."""
