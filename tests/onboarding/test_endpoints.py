"""The one endpoint rule (what the registry stores, the base URL onboarding talks to) and the
host policy of ``upstream_allowlist``."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest

from uniroute.data.representative import RepresentativePrompt
from uniroute.errors import ConfigError, OnboardingError, RegistryError
from uniroute.onboarding.client import onboard_endpoint
from uniroute.onboarding.endpoints import base_url, check_endpoint
from uniroute.onboarding.upstream_hosts import EndpointPolicy
from uniroute.testing.harness import serve_in_thread


@pytest.mark.parametrize(
    "endpoint, stored, base",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("https://h/api/v1/", "https://h/api/v1", "https://h/api/v1"),
        (" http://h/v1 ", "http://h/v1", "http://h/v1"),
        ("HTTP://Host/v1", "HTTP://Host/v1", "http://host/v1"),
        ("http://[::1]:8000", "http://[::1]:8000", "http://[::1]:8000/v1"),
        # A path of slashes only is a bare host (it used to give a base URL without /v1).
        ("http://h//", "http://h", "http://h/v1"),
    ],
)
def test_accepted_endpoints_are_stored_and_give_a_base_url(
    endpoint: str, stored: str, base: str
) -> None:
    assert check_endpoint(endpoint) == stored
    assert base_url(endpoint) == base
    # What the registry stores gives the same base URL, and a base URL is its own base URL.
    assert base_url(stored) == base
    assert base_url(base) == base


@pytest.mark.parametrize(
    "endpoint, message",
    [
        ("ftp://host/v1", "http\\(s\\) base URL"),
        ("localhost:8000", "http\\(s\\) base URL"),
        ("", "http\\(s\\) base URL"),
        ("http://", "http\\(s\\) base URL"),
        ("http://:8000/v1", "http\\(s\\) base URL"),
        (8000, "http\\(s\\) base URL"),
        ("http://host:port/v1", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("http://host\n/v1", "not a valid URL"),
        ("https://user:pw@host/v1", "must not embed credentials"),
        ("http://user@host/v1", "must not embed credentials"),
        ("ftp://user:pw@host/v1", "must not embed credentials"),
    ],
)
def test_refused_endpoints_are_refused_by_both(endpoint: object, message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        check_endpoint(endpoint)
    with pytest.raises(OnboardingError, match=message):
        base_url(endpoint)


def test_a_refused_endpoint_never_echoes_a_password() -> None:
    for endpoint in ("http://user:s3cret@host:port/v1", "ftp://user:s3cret@host/v1"):
        with pytest.raises(OnboardingError) as caught:
            base_url(endpoint)
        assert "s3cret" not in str(caught.value)


def test_none_is_no_endpoint_and_the_error_type_is_the_callers() -> None:
    assert check_endpoint(None) is None
    with pytest.raises(OnboardingError):
        check_endpoint("ftp://host", error=OnboardingError)
    with pytest.raises(RegistryError):
        base_url("ftp://host", error=RegistryError)


# ------------------------------------------------------------------------------ the strict rule
@pytest.mark.parametrize(
    "endpoint, stored, base",
    [
        ("https://api.openai.com/v1", "https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://10.0.0.1:65535/v1", "http://10.0.0.1:65535/v1", "http://10.0.0.1:65535/v1"),
        ("http://h:1", "http://h:1", "http://h:1/v1"),
        ("http://[2001:db8::1]/v1", "http://[2001:db8::1]/v1", "http://[2001:db8::1]/v1"),
        ("http://vllm_server:8000", "http://vllm_server:8000", "http://vllm_server:8000/v1"),
        ("https://xn--bcher-kva.ch/v1", "https://xn--bcher-kva.ch/v1", "https://xn--bcher-kva.ch/v1"),
        ("https://h/openai/deployments/gpt-4o.v2_~x", "https://h/openai/deployments/gpt-4o.v2_~x",
         "https://h/openai/deployments/gpt-4o.v2_~x"),
        # A link-local address is a valid URL: refusing it is the network policy's job.
        ("http://169.254.169.254", "http://169.254.169.254", "http://169.254.169.254/v1"),
    ],
)  # fmt: skip
def test_more_accepted_endpoints(endpoint: str, stored: str, base: str) -> None:
    assert check_endpoint(endpoint) == stored
    assert base_url(endpoint) == base == base_url(base)


EXPECTED = "expected an http(s) base URL"


@pytest.mark.parametrize(
    "endpoint, problem",
    [
        ("http://127.0.0.1:99999/v1", "port 99999 is out of range 1-65535"),
        ("http://127.0.0.1:0/v1", "port 0 is out of range 1-65535"),
        ("http://127.0.0.1:abc/v1", "port 'abc' is not a number"),
        ("http://127.0.0.1:+80/v1", "port '+80' is not a number"),
        ("http://127.0.0.1:/v1", "the port after ':' is empty"),
        ("http://h:8000/v1#/admin", "it has a fragment"),
        ("http://h:8000/v1?x=/admin", "it has a query"),
        ("http://h/v1/../admin", "path segment '..' is not plain"),
        ("http://h/./v1", "path segment '.' is not plain"),
        ("http://h/a%2Fb", "path segment 'a%2Fb' is not plain"),
        ("http://h/v1;x", "path segment 'v1;x' is not plain"),
        ("http://h//v1", "has an empty segment"),
        ("http://h\\v1", "label 'h\\\\v1' may hold only"),
        ("http://2852039166/", "host '2852039166' is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://0251.0376.0251.0376/", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://169.254.43518/", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://127.1/", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://0x7f000001/", "is neither a DNS name nor a dotted-decimal IPv4"),
        ("http://[fe80::1%25eth0]/v1", "IPv6 zone id"),
        ("http://[::1/v1", "no closing ']'"),
        ("http://[::1]x/v1", "unexpected 'x' after the IPv6 host"),
        ("http://[h]/v1", "brackets are for IPv6 only"),
        ("http://[:::1]/v1", "is not a valid IPv6 address"),
        ("http://::1/v1", "must be written in brackets"),
        ("http://bücher.ch/v1", "is not ASCII"),
        ("http://exa mple/v1", "whitespace or control characters"),
        ("http://h\x00/v1", "whitespace or control characters"),
        ("http://h/v1\u200b", "whitespace or control characters"),
        ("http://-h.example/v1", "label '-h' may hold only"),
        ("http://a..b/v1", "has an empty label"),
        (f"http://{'a' * 64}.com/v1", "may hold only letters"),
        (f"http://{'a.' * 130}com/v1", "longer than 253 characters"),
        ("gopher://h/v1", "scheme 'gopher' is not http or https"),
        ("//h/v1", "does not start with http:// or https://"),
    ],
)
def test_refused_endpoints_name_the_problem(endpoint: str, problem: str) -> None:
    for error, check in ((RegistryError, check_endpoint), (OnboardingError, base_url)):
        with pytest.raises(error) as caught:
            check(endpoint, error=error)
        message = str(caught.value)
        assert problem in message, message
        assert message.startswith("endpoint ") and EXPECTED in message


def test_an_overlong_endpoint_is_refused_without_being_repeated() -> None:
    endpoint = "https://h/" + "v1/" * 1000
    with pytest.raises(RegistryError, match="longer than 2048 characters") as caught:
        check_endpoint(endpoint)
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://u:s3cret@h/v1",
        "http://s3cret@h:99999/v1",
        "s3cret@h/v1",
        "http://h/v1?key=s3cret",
        "http://h/v1#s3cret",
        "http://h:abc/v1?key=s3cret",
        "http://h\\@s3cret/v1",
    ],
)
def test_no_refusal_repeats_credentials_a_query_or_a_fragment(endpoint: str) -> None:
    with pytest.raises(RegistryError) as caught:
        check_endpoint(endpoint)
    assert "s3cret" not in str(caught.value)


def test_the_http_client_and_the_resolver_read_numeric_hosts_as_addresses() -> None:
    """Why the rule refuses numeric hosts: neither httpx nor urllib normalises them, so the
    address actually called (the resolver's reading) would hide behind a harmless-looking name."""
    import socket
    import urllib.parse

    import httpx

    metadata = socket.inet_aton("169.254.169.254")
    assert httpx.URL("http://2852039166/").host == "2852039166"
    assert urllib.parse.urlsplit("http://0251.0376.0251.0376/").hostname == "0251.0376.0251.0376"
    for spelling in ("2852039166", "0251.0376.0251.0376", "0xa9.0xfe.0xa9.0xfe", "169.254.43518"):
        assert socket.inet_aton(spelling) == metadata
        with pytest.raises(RegistryError):
            check_endpoint(f"http://{spelling}/v1")


# ------------------------------------------------------------------------------ the host policy
ALL_REFUSED_BY_DEFAULT = [
    ("http://169.254.169.254/latest", "cloud metadata address"),
    ("http://169.254.1.1:8000/v1", "link-local address"),
    ("http://[fe80::1]:8000/v1", "link-local address"),
    ("http://[fd00:ec2::254]/v1", "cloud metadata address"),
    ("http://100.100.100.200/v1", "cloud metadata address"),
    ("http://metadata.google.internal/v1", "cloud metadata service"),
    ("http://METADATA.GOOGLE.INTERNAL/v1", "cloud metadata service"),
    ("http://metadata.goog/v1", "cloud metadata service"),
    ("http://metadata/v1", "cloud metadata service"),
    # IPv6 forms that carry the metadata address.
    ("http://[::ffff:169.254.169.254]/v1", "(it carries 169.254.169.254)"),
    ("http://[::ffff:a9fe:a9fe]/v1", "(it carries 169.254.169.254)"),
    ("http://[64:ff9b::a9fe:a9fe]/v1", "(it carries 169.254.169.254)"),
    ("http://[2002:a9fe:a9fe::1]/v1", "(it carries 169.254.169.254)"),
    ("http://[::ffff:169.254.7.7]/v1", "link-local address (it carries 169.254.7.7)"),
]


@pytest.mark.parametrize("endpoint, reason", ALL_REFUSED_BY_DEFAULT)
def test_the_default_policy_refuses_link_local_and_metadata_hosts(
    endpoint: str, reason: str
) -> None:
    policy = EndpointPolicy()
    refusal = policy.refusal(base_url(endpoint))
    assert refusal is not None and reason in refusal
    assert "upstream_allowlist names it explicitly" in refusal
    with pytest.raises(RegistryError, match="names it explicitly"):
        policy.check(endpoint)
    with pytest.raises(OnboardingError, match=re.escape(reason)):
        policy.check(endpoint, OnboardingError)


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8000/v1",
        "http://[::1]:8000/v1",
        "http://localhost:8000/v1",
        "https://api.openai.com/v1",
        "http://10.1.2.3/v1",
        "http://[fd00::1]/v1",
        "http://100.64.0.1/v1",
        "http://metadata.example.com/v1",
    ],
)
def test_the_default_policy_allows_other_hosts(endpoint: str) -> None:
    policy = EndpointPolicy(resolve=lambda host: {"localhost": ["127.0.0.1"]}.get(host, []))
    assert policy.refusal(base_url(endpoint)) is None
    policy.check(endpoint)


ALLOWLIST = ("api.openai.com", "*.example.com", "10.0.0.0/8", "fd00::/8", "::1", "0.0.0.0/0")


@pytest.mark.parametrize(
    "allowlist, endpoint, allowed",
    [
        (ALLOWLIST[:5], "https://api.openai.com/v1", True),
        (ALLOWLIST[:5], "https://API.OpenAI.com/v1", True),
        (ALLOWLIST[:5], "https://a.example.com/v1", True),
        (ALLOWLIST[:5], "https://a.b.example.com/v1", True),
        (ALLOWLIST[:5], "https://example.com/v1", False),  # a wildcard is for names below it
        (ALLOWLIST[:5], "https://evil-example.com/v1", False),
        (ALLOWLIST[:5], "https://api.openai.com.evil.net/v1", False),
        (ALLOWLIST[:5], "https://eu.api.openai.com/v1", False),
        (ALLOWLIST[:5], "http://10.200.0.1:8000/v1", True),
        (ALLOWLIST[:5], "http://11.0.0.1:8000/v1", False),
        (ALLOWLIST[:5], "http://[fd00::5]/v1", True),
        (ALLOWLIST[:5], "http://[::1]:8000/v1", True),
        (ALLOWLIST[:5], "http://[::ffff:10.1.2.3]/v1", True),  # carries a listed address
        (ALLOWLIST[:5], "http://127.0.0.1:8000/v1", False),
        # Network entries admit IP literals only: the check before each call has no DNS.
        (ALLOWLIST[:5], "http://localhost:8000/v1", False),
        # Broad entries never admit link-local or metadata hosts...
        (ALLOWLIST, "http://169.254.169.254/v1", False),
        (ALLOWLIST, "http://[fd00:ec2::254]/v1", False),
        (ALLOWLIST, "http://[::ffff:169.254.169.254]/v1", False),
        (("::/0",), "http://[fe80::1]/v1", False),
        (("*.google.internal",), "http://metadata.google.internal/v1", False),
        (("*.google.internal",), "http://other.google.internal/v1", True),
        (ALLOWLIST, "http://8.8.8.8/v1", True),
        # ... entries inside those ranges, or naming them exactly, do.
        (("169.254.169.254",), "http://169.254.169.254/v1", True),
        (("169.254.169.254",), "http://[::ffff:169.254.169.254]/v1", True),
        (("169.254.169.254",), "http://169.254.169.253/v1", False),
        (("169.254.0.0/16",), "http://169.254.10.20/v1", True),
        (("169.254.10.0/24",), "http://169.254.10.20/v1", True),
        (("fe80::/64",), "http://[fe80::1]/v1", True),
        (("[fd00:ec2::254]",), "http://[fd00:ec2::254]/v1", True),
        (("metadata.google.internal",), "http://metadata.google.internal/v1", True),
    ],
)
def test_an_allowlist_admits_only_what_it_lists(
    allowlist: tuple[str, ...], endpoint: str, allowed: bool
) -> None:
    policy = EndpointPolicy(allowlist, resolve=lambda host: [])
    refusal = policy.refusal(base_url(endpoint))
    assert (refusal is None) == allowed, refusal
    if not allowed:
        with pytest.raises(RegistryError, match="upstream_allowlist"):
            policy.check(endpoint)


def test_a_name_resolving_to_a_metadata_address_is_refused_when_added() -> None:
    addresses = {
        "rebind.example.com": ["203.0.113.7", "169.254.169.254"],
        "v6.example.com": ["fe80::1%eth0"],
        "mapped.example.com": ["::ffff:169.254.169.254"],
        "fine.example.com": ["203.0.113.7", "2001:db8::7"],
    }
    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return addresses[host]

    policy = EndpointPolicy(resolve=resolve)
    for host, shown in [
        ("rebind.example.com", "169.254.169.254"),
        ("v6.example.com", "fe80::1"),
        ("mapped.example.com", "::ffff:a9fe:a9fe"),
    ]:
        # The check before each call never resolves (no DNS at request time)...
        assert policy.refusal(f"http://{host}/v1") is None
        # ... the check made when a model is added does.
        with pytest.raises(RegistryError, match=f"'{host}' resolves to {re.escape(shown)}"):
            policy.check(f"http://{host}/v1")
    policy.check("http://fine.example.com/v1")
    assert asked == [
        "rebind.example.com",
        "v6.example.com",
        "mapped.example.com",
        "fine.example.com",
    ]
    # A listed name is still refused when it resolves to such an address...
    listed = EndpointPolicy(["rebind.example.com"], resolve=resolve)
    with pytest.raises(RegistryError, match="resolves to 169.254.169.254"):
        listed.check("http://rebind.example.com/v1")
    # ... unless the allow-list names that address explicitly.
    EndpointPolicy(["rebind.example.com", "169.254.169.254"], resolve=resolve).check(
        "http://rebind.example.com/v1"
    )


def test_a_name_that_does_not_resolve_is_not_refused() -> None:
    def fails(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def hangs(host: str) -> list[str]:
        time.sleep(5)
        return ["169.254.169.254"]

    EndpointPolicy(resolve=fails).check("http://vllm.svc.cluster.local:8000/v1")
    started = time.perf_counter()
    EndpointPolicy(resolve=hangs, resolve_timeout_s=0.1).check("http://slow.example.com/v1")
    assert time.perf_counter() - started < 2
    # The system resolver, for real: localhost is loopback, .invalid never resolves.
    EndpointPolicy().check("http://localhost:8000/v1")
    EndpointPolicy().check("http://no-such-host.invalid/v1")


def test_the_check_before_each_call_is_cached_and_never_raises() -> None:
    policy = EndpointPolicy(["10.0.0.0/8"])
    base = "http://10.1.2.3:8000/v1"
    assert policy.refusal(base) is None
    assert "not in upstream_allowlist" in (policy.refusal("http://11.1.2.3/v1") or "")
    assert "port 99999 is out of range" in (policy.refusal("http://10.1.2.3:99999/v1") or "")
    started = time.perf_counter()
    for _ in range(20_000):
        policy.refusal(base)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "entry, problem",
    [
        ("", "must be a non-empty string"),
        ("   ", "must be a non-empty string"),
        (5, "must be a non-empty string"),
        ("http://api.openai.com", "without scheme or port"),
        ("api.openai.com:443", "not a valid IP network"),
        ("10.0.0.1/8", "has host bits set"),
        ("10.0.0.0/33", "not a valid IP network"),
        ("fe80::1%eth0", "zone id"),
        ("*", "'*' may only open a '*.suffix' wildcard"),
        ("*.", "it has no host"),
        ("a*.example.com", "'*' may only open a '*.suffix' wildcard"),
        ("2852039166", "neither a DNS name nor a dotted-decimal IPv4"),
        ("bad_host!", "may hold only letters"),
    ],
)
def test_bad_allowlist_entries_are_config_errors_naming_them(entry: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        EndpointPolicy(["api.openai.com", entry])
    message = str(caught.value)
    assert f"upstream_allowlist entry {entry!r}" in message and problem in message, message


def test_an_allowlist_given_as_one_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a list"):
        EndpointPolicy("10.0.0.0/8")


def test_onboarding_checks_the_policy_before_its_first_request(tmp_path) -> None:
    requests: list[str] = []

    async def upstream(scope: dict, receive: Any, send: Any) -> None:
        """Counts requests; answers each with an empty 500."""
        if scope["type"] != "http":
            return
        requests.append(scope["path"])
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    prompts = [RepresentativePrompt("p1", "Which is a mammal? A) cat B) fish", "arc", "A")]
    with serve_in_thread(upstream) as url:
        for endpoint, policy, reason in [
            (f"{url}/v1", EndpointPolicy(["10.0.0.0/8"]), "not in upstream_allowlist"),
            ("http://169.254.169.254/v1", None, "cloud metadata address"),
            ("http://[::ffff:169.254.169.254]/v1", None, "it carries 169.254.169.254"),
        ]:
            with pytest.raises(OnboardingError, match=re.escape(reason)):
                onboard_endpoint(
                    "m", endpoint, prompts, endpoint_policy=policy, progress=False,
                    cache_path=tmp_path / "answers.sqlite3", retries=0,
                )  # fmt: skip
    assert requests == []
