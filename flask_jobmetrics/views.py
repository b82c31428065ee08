"""Rows -> models, and the job aggregates computed from client rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .deltas import Ops, client_fields_after
from .model_loading import MODEL_LOCK
from .rules import as_time
from .schema import (
    END_TIME,
    ERROR_DETAILS,
    PROGRESS_LOG,
    START_TIME,
    STATUS,
    SYSTEM_NOTES,
)
from .status import Status

if TYPE_CHECKING:
    from .models import ClientRun, JobRun, RejectedMetric

__all__ = ["client_view", "deferred_client_view", "job_view", "with_pending"]

_OWN_ATTRIBUTES = frozenset({STATUS, START_TIME, END_TIME, SYSTEM_NOTES, ERROR_DETAILS, PROGRESS_LOG})


def _metrics(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that are metrics: not a model attribute of their own, not internal (``_``)."""
    return {k: v for k, v in fields.items() if k not in _OWN_ATTRIBUTES and not k.startswith("_")}


#: A row's fields with this process's still-buffered ops applied (a new row is Running).
with_pending = client_fields_after


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        return Status.RUNNING


def client_view(
    run_id: str,
    client_id: str,
    fields: Mapping[str, Any],
    *,
    completed: bool,
    rejected: list[RejectedMetric] | None = None,
) -> ClientRun:
    return _trusted(_values(run_id, client_id, fields, completed, rejected))


def _values(
    run_id: str,
    client_id: str,
    fields: Mapping[str, Any],
    completed: bool,
    rejected: list[RejectedMetric] | None,
) -> dict[str, Any]:
    """The attribute values of a ClientRun of a row's fields."""
    return {
        "run_id": run_id,
        "client_id": client_id,
        "client_run_id": f"{run_id}-{client_id}",
        "status": _status(fields.get(STATUS)),
        "start_time": as_time(fields.get(START_TIME)),
        "end_time": as_time(fields.get(END_TIME)),
        "metrics": _metrics(fields),
        "notes": fields.get(SYSTEM_NOTES) or "",
        "error": fields.get(ERROR_DETAILS) or None,
        "progress_log": fields.get(PROGRESS_LOG) or "",
        "rejected": rejected or [],
        "completed": completed,
    }


def deferred_client_view(
    run_id: str,
    client_id: str,
    stored: Mapping[str, Any] | None,
    pending: Ops | None,
    completed: bool,
    rejected: list[RejectedMetric] | None = None,
) -> ClientRun:
    """``client_view`` of ``stored`` fields with ``pending`` ops applied, computed on first read.

    ``stored`` must not change afterwards (store rows are not), and ``pending`` is the
    caller's own copy.
    """
    run: ClientRun = _new_deferred(_DeferredClientRun)
    _set_parts(run, (run_id, client_id, stored, pending, completed, rejected))
    return run


def _client_values(
    run_id: str,
    client_id: str,
    stored: Mapping[str, Any] | None,
    pending: Ops | None,
    completed: bool,
    rejected: list[RejectedMetric] | None,
) -> dict[str, Any]:
    return _values(run_id, client_id, with_pending(stored, pending), completed, rejected)


def job_view(
    run_id: str,
    fields: Mapping[str, Any],
    client_ids: Iterable[str],
    aggregates: Mapping[str, Any] | None = None,
) -> JobRun:
    """A job row as a model; ``aggregates`` (live, for a running job) override stored ones."""
    merged = dict(fields)
    if aggregates is not None:
        for name, value in aggregates.items():
            if name == START_TIME:
                current = as_time(merged.get(START_TIME))
                merged[START_TIME] = value if current is None or value < current else current
            elif name != END_TIME:
                merged[name] = value
    return _construct_job(
        run_id=run_id,
        status=_status(merged.get(STATUS)),
        start_time=as_time(merged.get(START_TIME)),
        end_time=as_time(merged.get(END_TIME)),
        notes=merged.get(SYSTEM_NOTES) or "",
        metrics=_metrics(merged),
        client_ids=sorted(client_ids),
    )


# -- the model classes, made with the first view ---------------------------------------------
#
# The models load pydantic, which ``import flask_jobmetrics`` does without. The names the
# views call below start as stand-ins: the first call makes the classes (``_load``) and puts
# the real functions in their place, so that from then on a view costs what it did with the
# classes made at import. The update path (``deferred_client_view``) looks up the same three
# globals as ever, with no check added.

#: ``_trusted(values)``: a ClientRun of every field, values this module built, no validation.
_trusted: Callable[[dict[str, Any]], ClientRun]
#: ``JobRun.model_construct``.
_construct_job: Callable[..., JobRun]
#: The ``ClientRun`` subclass whose values are computed on first read; its slot's setter.
_DeferredClientRun: Any = None
_set_parts: Callable[[Any, tuple[Any, ...]], None]
#: ``object.__new__`` once the classes are made.
_new_deferred: Callable[[Any], Any]


def _load() -> None:
    """Import the models (and pydantic), make the view classes and bind the names above."""
    global _trusted, _construct_job, _DeferredClientRun, _set_parts, _new_deferred
    with MODEL_LOCK:  # fork-safe: a child forked meanwhile starts with them made, or not begun
        if _new_deferred is not _first_deferred:
            return  # another thread made them
        from pydantic import BaseModel

        from .models import ClientRun, JobRun

        client_run_fields = frozenset(ClientRun.model_fields)
        pydantic_slots = frozenset({"__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"})
        # The instance-dict slot of pydantic models, under the ``__dict__`` property below.
        dict_slot: Any = BaseModel.__dict__["__dict__"]

        def trusted(values: dict[str, Any]) -> ClientRun:
            """A ClientRun from values this module built (every field, right types), without
            pydantic's per-call work: the update path returns one per call (see benchmarks/)."""
            run = ClientRun.__new__(ClientRun)
            object.__setattr__(run, "__dict__", values)
            object.__setattr__(run, "__pydantic_fields_set__", set(client_run_fields))
            object.__setattr__(run, "__pydantic_extra__", None)
            object.__setattr__(run, "__pydantic_private__", None)
            return run

        class DeferredClientRun(ClientRun):
            """A ``ClientRun`` whose values are computed when first read.

            The update path returns one per call and most callers never look at it, so it
            only keeps what the values are made of (the row as last seen in the store and
            the ops buffered at the time of the call, both copies) and builds them on first
            access. To every reader it is a ``ClientRun``: its ``__class__``, equality,
            ``repr``, pydantic serialization (``model_dump``, ``TypeAdapter``), copies and
            pickles see the values.
            """

            __slots__ = ("__jm_parts__",)

            @property
            def __dict__(self) -> dict[str, Any]:
                values: dict[str, Any] = dict_slot.__get__(self)
                if not values:
                    values.update(_client_values(*self.__jm_parts__))
                    object.__setattr__(self, "__pydantic_fields_set__", set(client_run_fields))
                    object.__setattr__(self, "__pydantic_extra__", None)
                    object.__setattr__(self, "__pydantic_private__", None)
                return values

            @__dict__.setter
            def __dict__(self, values: dict[str, Any]) -> None:
                dict_slot.__set__(self, values)

            @property  # type: ignore[misc]
            def __class__(self) -> type[ClientRun]:  # type: ignore[override]
                return ClientRun

            def __getattr__(self, name: str) -> Any:
                values = self.__dict__  # computes the values and sets pydantic's own slots
                if name in values:
                    return values[name]
                if name in pydantic_slots:
                    return object.__getattribute__(self, name)
                return super().__getattr__(name)  # type: ignore[misc]

            def __reduce_ex__(self, protocol: Any) -> Any:
                return trusted(dict(self.__dict__)).__reduce_ex__(protocol)

        _trusted = trusted
        _construct_job = JobRun.model_construct
        _DeferredClientRun = DeferredClientRun
        _set_parts = vars(DeferredClientRun)["__jm_parts__"].__set__  # the slot's own setter
        _new_deferred = object.__new__  # last: deferred_client_view reads it first


def _first_trusted(values: dict[str, Any]) -> ClientRun:
    _load()
    return _trusted(values)


def _first_job(**values: Any) -> JobRun:
    _load()
    return _construct_job(**values)


def _first_deferred(cls: object) -> Any:
    _load()
    return _new_deferred(_DeferredClientRun)


_trusted = _first_trusted
_construct_job = _first_job
_new_deferred = _first_deferred
