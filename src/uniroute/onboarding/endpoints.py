"""The one rule for a model's endpoint: which values are accepted, and the base URL they give.

The registry stores an endpoint as given (trimmed, without trailing slashes) after
``check_endpoint``; onboarding and the gateway talk to ``base_url(endpoint)``, which appends
``/v1`` to a bare host. Both parse with :func:`_parse`, so an endpoint the registry accepts always
has a base URL, and one onboarding refuses is never stored.

Accepted: an ``http`` or ``https`` URL with a host and no embedded credentials (the key belongs in
the environment variable named by ``api_key_env``).
"""

from __future__ import annotations

import re

import httpx

from uniroute.errors import OnboardingError, RegistryError, UsageError

_USERINFO = re.compile(r"//[^/@]*@")


def _shown(text: str) -> str:
    """The value for an error message, with any ``user:password@`` part masked."""
    return repr(_USERINFO.sub("//***@", text))


def _parse(value: object, error: type[UsageError]) -> tuple[str, httpx.URL]:
    """(the trimmed text, its parsed URL) of an acceptable endpoint, or ``error``."""
    if not isinstance(value, str):
        raise error(f"endpoint must be an http(s) base URL such as https://host/v1, got {value!r}")
    text = value.strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise error(f"endpoint {_shown(text)} is not a valid URL ({exc})") from None
    # Before the scheme check, so that a refused URL holding a password is never echoed back.
    if url.userinfo:
        raise error("endpoint must not embed credentials; use api_key_env for the key")
    if url.scheme not in ("http", "https") or not url.host:
        raise error(
            f"endpoint must be an http(s) base URL such as https://host/v1, got {_shown(text)}"
        )
    return text, url


def check_endpoint(value: str | None, error: type[UsageError] = RegistryError) -> str | None:
    """A model's endpoint as the registry stores it (trimmed, no trailing slash), or ``error``."""
    if value is None:
        return None
    text, _ = _parse(value, error)
    return text.rstrip("/")


def base_url(endpoint: str, error: type[UsageError] = OnboardingError) -> str:
    """The OpenAI base URL of an endpoint, e.g. ``http://host:port/v1`` (``/v1`` if bare)."""
    _, url = _parse(endpoint, error)
    base = str(url).rstrip("/")
    # A path of slashes only is a bare host too, so base_url(base_url(x)) == base_url(x).
    return base + "/v1" if not url.path.strip("/") else base
