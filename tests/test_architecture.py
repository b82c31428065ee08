"""The package's map stays complete: every module is in the layers contract and in docs/architecture.md."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest needs tomli before 3.11
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flask_jobmetrics"
#: Subpackages the map names as a whole (their modules are one concern each).
AS_A_WHOLE = ("dashboard", "testing")


def _modules() -> list[tuple[str, Path]]:
    """(dotted name, path relative to the package) of every module, package roots left out."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.name == "__init__.py" and relative.parent in (Path("."), Path("airtable")):
            continue  # the root re-exports, airtable/ holds no code: their modules are placed
        parts = relative.with_suffix("").parts
        name = ".".join(("flask_jobmetrics", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        found.append((name, relative))
    return found


def test_every_module_is_in_a_layer() -> None:
    """Each module of flask_jobmetrics is in the import-linter layers, itself or by its package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["id"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.split(":")}
    missing = [
        name for name, _ in _modules() if not any(name == p or name.startswith(p + ".") for p in placed)
    ]
    assert missing == []


def test_every_module_is_on_the_map() -> None:
    """docs/architecture.md names each module (the dashboard and the test tools as a whole)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(relative)
        for _, relative in _modules()
        if not (relative.parts[0] in AS_A_WHOLE and f"{relative.parts[0]}/" in text)
        and relative.name not in text
    ]
    assert missing == []
