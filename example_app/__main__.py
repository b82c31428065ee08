"""``python -m example_app COMMAND``: the Flask CLI of the example app.

``demo`` builds its own app (so it can point it at a fake Airtable before ``init_app``);
every other command (``run``, ``jobmetrics ...``, ``routes``) loads ``create_app()``.
"""

from __future__ import annotations

from flask.cli import FlaskGroup

from . import create_app
from .demo import demo_command


def main() -> None:
    cli = FlaskGroup(create_app=lambda: create_app())
    cli.add_command(demo_command)
    cli.main(prog_name="python -m example_app")


if __name__ == "__main__":
    main()
