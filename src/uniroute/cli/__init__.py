"""The `uniroute` command line."""
