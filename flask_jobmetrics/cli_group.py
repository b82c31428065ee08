"""The command group of ``flask jobmetrics`` and its subgroups (``airtable``).

A ``ServiceGroup`` is a Flask ``AppGroup`` whose ``service_command`` declares a command
that gets the app's ``MetricsService``: it loads the app itself (so a store that cannot be
opened is reported like any other error) and turns ``JobMetricsError``/``ValueError`` into
a one-line ``Error: ...`` with exit code 1.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from .exceptions import JobMetricsError, StoreError
from .service import MetricsService
from .state import get_state

__all__ = ["ServiceGroup", "one_line"]

P = ParamSpec("P")


def one_line(text: str) -> str:
    """``text`` with its runs of whitespace (newlines included) as single spaces."""
    return " ".join(text.split())


class ServiceGroup(AppGroup):
    """An ``AppGroup`` of commands that act on the app's service."""

    def service_command(
        self, name: str, **options: Any
    ) -> Callable[[Callable[Concatenate[MetricsService, P], None]], click.Command]:
        """Declare the command ``name``: the function gets the app's service, errors become one line."""

        def decorate(function: Callable[Concatenate[MetricsService, P], None]) -> click.Command:
            @functools.wraps(function)
            def run(*args: P.args, **kwargs: P.kwargs) -> None:
                try:
                    if not current_app:
                        ctx = click.get_current_context()
                        app = ctx.ensure_object(ScriptInfo).load_app()
                        ctx.with_resource(app.app_context())
                    function(get_state().service, *args, **kwargs)
                except StoreError as exc:
                    raise click.ClickException(f"store unreachable: {one_line(str(exc))}") from exc
                except (JobMetricsError, ValueError) as exc:
                    raise click.ClickException(one_line(str(exc))) from exc

            command: click.Command = self.command(name, with_appcontext=False, **options)(run)
            return command

        return decorate
