"""Every error UniRoute raises on purpose, in one hierarchy.

Each class says how it surfaces: ``exit_code`` for the command line, ``http_status`` and ``code``
for the gateway's OpenAI-style error body. The CLI and the gateway derive both from these
attributes, so a new error needs no new catch list anywhere::

    UniRouteError                      a bug-free failure; exit 1, HTTP 500
    ├── UsageError (ValueError)        bad input from the caller; exit 2, HTTP 400
    │   ├── DataError                  malformed data, scores or costs (names file, row, field)
    │   │   ├── OnboardingError        an endpoint could not be onboarded (unreachable, garbage)
    │   │   └── GradingError           an answer or a reference cannot be graded
    │   ├── RouterError                a router used wrongly (shapes, not fitted, empty pool)
    │   │   ├── NoCapableModelError    no model can take the request (capabilities, context)
    │   │   └── CalibrationError       a calibration target cannot be met by the pool
    │   ├── RegistryError              a registry change that cannot be made
    │   │   ├── ModelNotFoundError     no such model (HTTP 404)
    │   │   ├── ModelExistsError       the model is already registered (HTTP 409)
    │   │   ├── JobRunningError        a job about that model is unfinished (HTTP 409)
    │   │   └── KeyNotFoundError       no client key with that id (HTTP 404)
    │   └── ConfigError                a gateway configuration value is invalid
    └── StateError (ValueError)        a saved state (artifact, registry) is missing, corrupt,
                                       locked or of another version; exit 2, HTTP 503

The ``ValueError`` bases keep ``except ValueError`` working for callers that predate this module.
"""

from __future__ import annotations

from typing import ClassVar


class UniRouteError(Exception):
    """Base of every error UniRoute raises on purpose."""

    exit_code: ClassVar[int] = 1
    # Class defaults, not ClassVars: an instance may carry its own (the gateway's ApiError sets
    # both per refusal, and an OpenAI error body's ``code`` may be null).
    http_status: int = 500
    code: str | None = "internal_error"


class UsageError(UniRouteError, ValueError):
    """Bad input from the caller: a clear one-line message, exit code 2, HTTP 400."""

    exit_code = 2
    http_status = 400
    code = "invalid_request"


class DataError(UsageError):
    """Malformed or inconsistent routing data; the message names the file, row and field."""

    code = "invalid_data"


class OnboardingError(DataError):
    """Onboarding failed (unreachable endpoint, rejected key, garbage answers, ungradeable task).

    The registry is left unchanged.
    """

    code = "onboarding_failed"


class GradingError(DataError):
    """An answer or a reference cannot be graded (unknown task, malformed tests)."""

    code = "grading_failed"


class RouterError(UsageError):
    """Bad use of a router: unknown model, wrong shapes, not fitted, empty pool."""


class NoCapableModelError(RouterError):
    """No model the router may pick can take the request (its capabilities or its context)."""

    code = "no_capable_model"


class CalibrationError(RouterError):
    """A calibration target cannot be met by the current pool (or is malformed)."""

    code = "calibration_failed"


class RegistryError(UsageError):
    """A registry change that cannot be made (invalid field, unknown or duplicate model)."""

    code = "invalid_model"


class ModelNotFoundError(RegistryError):
    """The registry has no model of that name."""

    http_status = 404
    code = "model_not_found"


class ModelExistsError(RegistryError):
    """The model is already registered and the change did not ask to replace it."""

    http_status = 409
    code = "model_exists"


class JobRunningError(RegistryError):
    """A background job about the same model is still unfinished (on this or another replica)."""

    http_status = 409
    code = "job_running"


class KeyNotFoundError(RegistryError):
    """The registry has no client key with that id."""

    http_status = 404
    code = "key_not_found"


class ConfigError(UsageError):
    """A gateway configuration value is missing or invalid."""

    code = "invalid_config"


class StateError(UniRouteError, ValueError):
    """A saved state (router, artifact, registry) is missing, corrupt, locked or of another
    version."""

    exit_code = 2
    http_status = 503
    code = "state_unavailable"
