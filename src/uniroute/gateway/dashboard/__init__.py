"""The web dashboard served at ``/ui`` (see :mod:`uniroute.gateway.dashboard.routes`)."""
