"""The OpenAI-compatible routing gateway: an HTTP front for a deployed router and its pool.

Laid out by concern: ``app`` (the factory, ``create_app``), ``dependencies`` (the ``Gateway``
service object, auth), ``errors``, ``middleware``, ``body``, ``upstream``, ``fallback``,
``batching``, ``metrics``, ``access_log``, ``config``, ``health``, ``openapi``, ``serving``
(running it with uvicorn on uvloop) and ``http_protocol`` (the HTTP protocol it serves with:
read deadlines, the connection cap); ``openai/`` and ``admin/`` each with its ``protocol``
(pydantic request models) and ``routes``.
"""
