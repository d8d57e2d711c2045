"""The one endpoint rule: what the registry stores and the base URL onboarding talks to."""

from __future__ import annotations

import pytest

from uniroute.errors import OnboardingError, RegistryError
from uniroute.onboarding.endpoints import base_url, check_endpoint


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
