"""``api_key_env`` is the NAME of a variable: values shaped like real API keys are refused.

The keys below have the shapes of real ones (prefix, length, alphabet) but random bodies from a
seeded generator. They are assembled at import time, never written out whole, so that secret
scanners have nothing to flag in this file.
"""

from __future__ import annotations

import random
import string

import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import RegistryError
from uniroute.registry import ModelCost, ModelRecord, Registry, looks_like_secret

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
URL_SAFE = ALNUM + "-_"


def _random(alphabet: str, n: int, seed: int, first: str = "") -> str:
    """``n`` characters of ``alphabet`` (the first one given, to make a letter lead)."""
    rng = random.Random(seed)
    body = "".join(rng.choice(alphabet) for _ in range(n - len(first)))
    return first + body


# Each key shape with what the refusal must say about it.
KEY_SHAPES = {
    "OpenAI": ("sk-" + _random(ALNUM, 48, 1), "starts with 'sk-'"),
    "OpenAI project": ("sk-" + "proj-" + _random(URL_SAFE, 156, 2), "starts with 'sk-'"),
    "Anthropic": ("sk-" + "ant-api03-" + _random(URL_SAFE, 93, 3) + "AA", "starts with 'sk-'"),
    "Google": ("AI" + "za" + _random(URL_SAFE, 35, 4, "Sy"), "starts with 'AIza'"),
    "AWS access key": ("AK" + "IA" + _random(UPPER_ALNUM, 16, 5), "AWS access key id"),
    "AWS temporary key": ("AS" + "IA" + _random(UPPER_ALNUM, 16, 6), "AWS access key id"),
    "GitHub classic": ("gh" + "p_" + _random(ALNUM, 36, 7), "starts with 'ghp_'"),
    "GitHub fine-grained": (
        "github" + "_pat_" + _random(ALNUM, 22, 8, "11") + "_" + _random(ALNUM, 59, 9),
        "starts with 'github_pat_'",
    ),
    "Hugging Face": ("hf" + "_" + _random(string.ascii_letters, 34, 10), "starts with 'hf_'"),
    "Groq": ("gs" + "k_" + _random(ALNUM, 52, 11), "starts with 'gsk_'"),
    "Mistral": (_random(ALNUM, 32, 12, "q"), "a run of 32 random-looking characters"),
    "Cohere": (_random(ALNUM, 40, 13, "Z"), "a run of 40 random-looking characters"),
    "Together": (_random("0123456789abcdef", 64, 14, "e"), "a run of 64 random-looking"),
    "Slack": (
        "xo" + "xb-" + _random(string.digits, 12, 15) + "-" + _random(string.digits, 13, 16)
        + "-" + _random(ALNUM, 24, 17),
        "starts with 'xox'",
    ),
    "JWT": (
        "ey" + "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." + "eyJ" + _random(URL_SAFE, 60, 18) + "."
        + _random(URL_SAFE, 43, 19),
        "starts with 'eyJ'",
    ),
    "Stripe": ("sk" + "_live_" + _random(ALNUM, 99, 20), "starts with 'sk_'"),
    # Shorter random runs that no prefix gives away.
    "32 hex, letter first": (_random("0123456789abcdef", 32, 21, "c"), "a run of 32"),
    "20 mixed-case letters and digits": (_random(ALNUM, 20, 22, "Kq7"), "a run of 20"),
}  # fmt: skip

VARIABLE_NAMES = [
    "OPENAI_API_KEY",
    "MY_VLLM_KEY_2",
    "ANTHROPIC_API_KEY",
    "HF_TOKEN",
    "AZURE_OPENAI_API_KEY",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HUGGINGFACEHUB_API_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "REPLAY_GPT4_KEY",
    # Lower case names stay accepted, as they were before the key check was tightened.
    "my_gateway_key",
    "hf_token",
    "K2",
]


def _record(**fields: object) -> ModelRecord:
    return ModelRecord(name="m", cost=ModelCost(per_query=0.001), **fields)


@pytest.mark.parametrize("kind", sorted(KEY_SHAPES))
def test_values_shaped_like_real_keys_are_refused_with_the_reason(kind: str) -> None:
    key, reason = KEY_SHAPES[kind]
    assert looks_like_secret(key)
    with pytest.raises(RegistryError) as caught:
        _record(endpoint="http://127.0.0.1:9/v1", api_key_env=key)
    message = str(caught.value)
    assert "NAME of the environment variable" in message and reason in message, message
    # Neither the key nor a piece of its random body is repeated.
    assert key not in message and key[-12:] not in message


@pytest.mark.parametrize("name", VARIABLE_NAMES)
def test_variable_names_are_accepted(name: str) -> None:
    assert not looks_like_secret(name)
    assert _record(api_key_env=name).api_key_env == name


def test_a_key_stored_by_an_older_version_loads_but_is_never_used_or_shown(
    backend: RegistryBackend,
) -> None:
    path = backend.new_location()
    key = KEY_SHAPES["Mistral"][0]
    with Registry(path) as registry:
        registry.add_model(
            _record(endpoint="http://127.0.0.1:9/v1", api_key_env="MISTRAL_API_KEY"), {"p0": 1.0}
        )
        registry.add_model(ModelRecord(name="other", cost=ModelCost(per_query=0.002)), {"p0": 0.5})
    # What an older, laxer version could have written.
    backend.execute(path, "UPDATE models SET api_key_env = ? WHERE name = 'm'", (key,))
    with Registry(path) as registry:
        records = {r.name: r for r in registry.list_models()}
    stored = records["m"]
    assert stored.api_key_env is None
    assert stored.problem is not None and "api_key_env looks like a key" in stored.problem
    assert key not in repr(stored) and key not in str(stored.to_dict())
    assert stored.to_dict()["problem"] == stored.problem
    assert records["other"].problem is None and records["other"].to_dict()["problem"] is None
    # A record built to be stored is refused as before: only read-back records are tolerated.
    with pytest.raises(RegistryError, match="NAME of the environment variable"):
        _record(api_key_env=key)
