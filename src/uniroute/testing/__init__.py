"""Test tooling shipped with the package (replay upstreams, child processes); never imported by
the product code, as ``starlette.testclient`` is not imported by Starlette itself."""
