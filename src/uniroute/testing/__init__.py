"""Test tooling shipped with the package, as ``starlette.testclient`` is with Starlette: replay
upstreams (``replay``), child server processes (``child_process``, ``process``) and the gateway
harness (``harness``: pools from recorded data, in-thread servers, waiting), and a throwaway
PostgreSQL cluster for registry tests (``postgres``). Product code never imports it."""
