"""Model capabilities and token limits in records and in the registry, on both backends."""

from __future__ import annotations

import pytest

from tests.registry.postgres import RegistryBackend
from uniroute.errors import RegistryError
from uniroute.registry import ModelCost, ModelRecord, Registry


def _record(**fields) -> ModelRecord:
    return ModelRecord(name="m", cost=ModelCost(per_query=0.001), **fields)


def test_capabilities_and_limits_are_stored_and_read_back(backend: RegistryBackend) -> None:
    with Registry(backend.new_location()) as registry:
        registry.add_model(
            _record(capabilities=("vision", "tools", "tools"), context_window=128_000,
                    max_output_tokens=4096),
            {"p0": 1.0},
        )  # fmt: skip
        registry.add_model(ModelRecord(name="plain", cost=ModelCost(per_query=0.0)), {"p0": 0.0})
        stored = registry.get_model("m")
        assert (stored.capabilities, stored.context_window, stored.max_output_tokens) == (
            ("tools", "vision"), 128_000, 4096,
        )  # fmt: skip
        plain = registry.get_model("plain")
        assert (plain.capabilities, plain.context_window, plain.max_output_tokens) == (
            (),
            None,
            None,
        )
        assert stored.to_dict()["capabilities"] == ["tools", "vision"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"capabilities": ("tools", "telepathy")}, "unknown capability 'telepathy'; known: tools"),
        ({"capabilities": "tools"}, "capabilities must be a list of names"),
        ({"context_window": 0}, "context_window must be a whole number of tokens"),
        ({"context_window": 1.5}, "context_window must be a whole number of tokens"),
        ({"max_output_tokens": True}, "max_output_tokens must be a whole number of tokens"),
        ({"max_output_tokens": 10**12}, "max_output_tokens must be a whole number of tokens fro"),
    ],
)
def test_bad_capabilities_or_limits_name_the_model_and_field(fields, message) -> None:
    with pytest.raises(RegistryError, match=f"model 'm': {message}"):
        _record(**fields)
