"""The one rule for a model's endpoint: which values are accepted, and the base URL they give.

The registry stores an endpoint as given (trimmed, without trailing slashes) after
``check_endpoint``; onboarding and the gateway talk to ``base_url(endpoint)``, which appends
``/v1`` to a bare host. Both parse with :func:`parse_endpoint`, so an endpoint the registry
accepts always has a base URL, and one onboarding refuses is never stored.

Accepted: ``http`` or ``https``, ``://``, a host, an optional port and an optional path, nothing
else:

* the host is a DNS name (labels of letters, digits, ``-`` and ``_``; ASCII, so an
  internationalised name is written in its ``xn--`` form), a dotted-decimal IPv4 address or an
  IPv6 address in brackets (without a zone id). A host whose last label is a number (``2852039166``,
  ``0x7f.1``, ``0251.0376.0251.0376``) is none of these: HTTP clients and resolvers read such
  hosts as IPv4 addresses in decimal, octal or hexadecimal, which would hide the address called;
* the port, when given, is a number in 1-65535;
* the path, when given, is plain segments of letters, digits and ``- . _ ~`` (no ``.`` or
  ``..``, no empty segment), because the gateway appends ``/chat/completions`` to it.

Refused: credentials (``user:password@``; the key belongs in the environment variable named by
``api_key_env``), a query (``?``) or fragment (``#``), which would swallow the appended path,
whitespace and control characters. A refusal says what is wrong and never repeats credentials,
a query or a fragment.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from uniroute.errors import OnboardingError, RegistryError, UsageError

#: Longest endpoint accepted (far above any real base URL; bounds the work and the messages).
MAX_ENDPOINT_LENGTH = 2048
_EXPECTED = "expected an http(s) base URL such as https://host:8000/v1"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
# A last label read as a number by URL parsers and inet_aton: decimal, octal or 0x-hexadecimal.
_NUMERIC_LABEL = re.compile(r"^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
_DIGITS = re.compile(r"^[0-9]+$")
_SHOWN_LENGTH = 120


@dataclass(frozen=True)
class EndpointURL:
    """An endpoint the rule accepted, in parts.

    ``text`` is what the registry stores (trimmed, no trailing slash); ``scheme`` and ``host``
    are lowercase (an IPv6 host without its brackets); ``path`` is ``""`` or ``/segment/...``.
    """

    text: str
    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The host as an IP address when it is an IP literal, else None (a DNS name)."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def masked_endpoint(text: str) -> str:
    """An endpoint with its credentials, query and fragment masked (``***@``, ``?...``, ``#...``).

    What messages and listings may show of a value that may hold a secret.
    """
    scheme = _SCHEME.match(text)
    start = scheme.end() if scheme else 0
    rest = text[start:]
    authority_end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[:authority_end]:
        rest = "***@" + rest[rest.rindex("@", 0, authority_end) + 1 :]
    cut = min((i for i in (rest.find(c) for c in "?#") if i >= 0), default=-1)
    if cut >= 0:
        rest = rest[:cut] + rest[cut] + "..."
    return text[:start] + rest


def shown_endpoint(text: str) -> str:
    """An endpoint as error messages show it: masked (``masked_endpoint``), shortened, quoted."""
    shown = masked_endpoint(text)
    if len(shown) > _SHOWN_LENGTH:
        shown = shown[:_SHOWN_LENGTH] + "..."
    return repr(shown)


def host_problem(host: str) -> str | None:
    """Why ``host`` (no brackets, no port) is neither a DNS name nor an IP address; None if fine."""
    if not host:
        return "it has no host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"host {host!r} is not a valid IPv6 address"
        if "%" in host:
            return f"host {host!r} has an IPv6 zone id ('%...'), which is not supported"
        return None
    if not host.isascii():
        return f"host {host!r} is not ASCII; write an internationalised name in its xn-- form"
    if len(host) > 253:
        return f"host {host[:40]!r}... is longer than 253 characters"
    labels = host.split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return (
                f"host {host!r} is neither a DNS name nor a dotted-decimal IPv4 address (four "
                "numbers 0-255 without leading zeros, e.g. 10.0.0.1)"
            )
        return None
    for label in labels:
        if not label:
            return f"host {host!r} has an empty label"
        if not _LABEL.match(label):
            return (
                f"host {host!r}: label {label!r} may hold only letters, digits, '-' (not at its "
                "ends) and '_', 1 to 63 of them"
            )
    return None


def _problem(text: str) -> tuple[str | None, EndpointURL | None]:
    """(what is wrong with a trimmed endpoint, None) or (None, its parts)."""
    if any(c.isspace() or not c.isprintable() for c in text):
        return "it holds whitespace or control characters", None
    scheme_match = _SCHEME.match(text)
    if scheme_match is None:
        return "it does not start with http:// or https://", None
    scheme = scheme_match.group(1).lower()
    if scheme not in ("http", "https"):
        return f"scheme {scheme_match.group(1)!r} is not http or https", None
    rest = text[scheme_match.end() :]
    if "#" in rest:
        return "it has a fragment ('#...'), which would cut off the path the gateway adds", None
    if "?" in rest:
        return "it has a query ('?...'), which would swallow the path the gateway adds", None
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            return "its IPv6 host has no closing ']'", None
        host, after = authority[1:close], authority[close + 1 :]
        if ":" not in host:
            return f"'[{host}]' is not an IPv6 address (brackets are for IPv6 only)", None
        if after and not after.startswith(":"):
            return f"unexpected {after!r} after the IPv6 host", None
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            return "an IPv6 host must be written in brackets, e.g. http://[::1]:8000/v1", None
        host, colon, port_text_given = authority.partition(":")
        port_text = port_text_given if colon else None
    port = None
    if port_text is not None:
        if not port_text:
            return "the port after ':' is empty", None
        if not _DIGITS.match(port_text):
            return f"port {port_text!r} is not a number", None
        port = int(port_text)
        if not 1 <= port <= 65535:
            return f"port {port} is out of range 1-65535", None
    problem = host_problem(host)
    if problem is not None:
        return problem, None
    path = path.rstrip("/")
    if path:
        for segment in path[1:].split("/"):
            if not segment:
                return f"path {path!r} has an empty segment ('//')", None
            if segment in (".", "..") or not _SEGMENT.match(segment):
                return (
                    f"path segment {segment!r} is not plain (letters, digits and - . _ ~; "
                    "not . or ..)"
                ), None
    stored = text.rstrip("/")
    return None, EndpointURL(stored, scheme, host.lower(), port, path)


def parse_endpoint(value: object, error: type[UsageError] = RegistryError) -> EndpointURL:
    """The parts of an acceptable endpoint, or ``error`` naming what is wrong."""
    if not isinstance(value, str):
        raise error(f"endpoint must be a string: {_EXPECTED}, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise error(f"endpoint is empty; {_EXPECTED}")
    # Before anything is echoed, so that a refused URL holding a password never is.
    scheme_match = _SCHEME.match(text)
    rest = text[scheme_match.end() :] if scheme_match else text
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise error(
            "endpoint must not embed credentials (user:password@host); put the key in the "
            "environment variable named by api_key_env"
        )
    if len(text) > MAX_ENDPOINT_LENGTH:
        raise error(f"endpoint is longer than {MAX_ENDPOINT_LENGTH} characters; {_EXPECTED}")
    problem, parts = _problem(text)
    if problem is None and parts is not None:
        import httpx  # deferred: registry commands that never call an endpoint stay quick

        try:
            httpx.URL(parts.text)
        except httpx.InvalidURL as exc:  # the rule above should leave nothing it refuses
            problem = f"the HTTP client refuses it ({exc})"
    if problem is not None or parts is None:
        raise error(f"endpoint {shown_endpoint(text)} is not a valid URL: {problem} ({_EXPECTED})")
    return parts


def check_endpoint(value: str | None, error: type[UsageError] = RegistryError) -> str | None:
    """A model's endpoint as the registry stores it (trimmed, no trailing slash), or ``error``."""
    if value is None:
        return None
    return parse_endpoint(value, error).text


def base_url(endpoint: str, error: type[UsageError] = OnboardingError) -> str:
    """The OpenAI base URL of an endpoint, e.g. ``http://host:port/v1`` (``/v1`` if bare)."""
    import httpx

    parts = parse_endpoint(endpoint, error)
    base = str(httpx.URL(parts.text)).rstrip("/")
    # A path of slashes only is a bare host too, so base_url(base_url(x)) == base_url(x).
    return base if parts.path else base + "/v1"
