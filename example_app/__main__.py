"""``python -m example_app COMMAND``: the Flask CLI of the example app (``demo``, ``jobmetrics``...)."""

from __future__ import annotations

from flask.cli import FlaskGroup

from . import create_app


def main() -> None:
    FlaskGroup(create_app=lambda: create_app()).main(prog_name="python -m example_app")


if __name__ == "__main__":
    main()
