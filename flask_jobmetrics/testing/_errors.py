"""Airtable's error responses, as the emulator sends them.

Bodies follow what Airtable's API returns: ``{"error": {"type": ..., "message": ...}}``
for most errors, ``{"errors": [{"error": ..., "message": ...}]}`` for rate limiting.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AirtableError",
    "auth_required",
    "error_body",
    "invalid_request",
    "model_not_found",
    "not_found_route",
    "rate_limited",
    "record_not_found",
    "request_too_large",
    "unknown_field",
]

MODEL_NOT_FOUND_MESSAGE = (
    "Invalid permissions, or the requested model was not found. Check that both your user "
    "and your token have the required permissions, and that the model names and/or ids "
    "are correct."
)
RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please try again later"
RETRIABLE_MESSAGE = (
    "Server encountered an error while processing your request, and it is safe to retry the request"
)
_DEFAULT_TYPES: dict[int, tuple[str, str]] = {
    400: ("INVALID_REQUEST_UNKNOWN", "Invalid request: parameter validation failed."),
    401: ("AUTHENTICATION_REQUIRED", "Authentication required"),
    403: ("INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND", MODEL_NOT_FOUND_MESSAGE),
    404: ("NOT_FOUND", "Could not find what you are looking for"),
    413: ("REQUEST_TOO_LARGE", "Request body is too large"),
    422: (
        "INVALID_REQUEST_UNKNOWN",
        "Invalid request: parameter validation failed. Check your request data.",
    ),
    500: ("SERVER_ERROR", "Server error"),
    502: ("BAD_GATEWAY", "Bad gateway"),
    503: ("RETRIABLE_ERROR", RETRIABLE_MESSAGE),
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The usual Airtable error body."""
    return {"error": {"type": error_type, "message": message}}


def default_body(status: int) -> dict[str, Any]:
    """The body Airtable sends with ``status`` (used by fault injection)."""
    if status == 429:
        return {"errors": [{"error": "RATE_LIMIT_REACHED", "message": RATE_LIMIT_MESSAGE}]}
    error_type, message = _DEFAULT_TYPES.get(status, ("SERVER_ERROR", "Server error"))
    return error_body(error_type, message)


class AirtableError(Exception):
    """Raised inside the emulator to answer with an Airtable error response."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body

    @classmethod
    def of(cls, status: int, error_type: str, message: str) -> AirtableError:
        """An error with the usual ``{"error": {"type", "message"}}`` body."""
        return cls(status, error_body(error_type, message))


def auth_required() -> AirtableError:
    return AirtableError(401, default_body(401))


def model_not_found() -> AirtableError:
    """Unknown base or table, or a token without the scope: Airtable will not say which (403)."""
    return AirtableError(403, default_body(403))


def not_found_route() -> AirtableError:
    """A path the API does not have."""
    return AirtableError(404, {"error": "NOT_FOUND"})


def record_not_found() -> AirtableError:
    return AirtableError.of(404, "MODEL_ID_NOT_FOUND", "Record not found")


def request_too_large() -> AirtableError:
    """A body over the size limit: 413 ``REQUEST_TOO_LARGE`` (the type airtable.js gives it)."""
    return AirtableError(413, default_body(413))


def rate_limited() -> AirtableError:
    return AirtableError(429, default_body(429))


def invalid_request(message: str | None = None) -> AirtableError:
    return AirtableError.of(422, "INVALID_REQUEST_UNKNOWN", message or _DEFAULT_TYPES[422][1])


def unknown_field(name: str) -> AirtableError:
    return AirtableError.of(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"')
