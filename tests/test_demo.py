"""The README's demo: ``python -m example_app demo`` twice, then ``flask jobmetrics runs``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from example_app.scoring import CLIENTS

pytestmark = pytest.mark.slow  # the demo in subprocesses

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).with_name("flask")
TIMEOUT = 60


def _env(instance: Path) -> dict[str, str]:
    """Our environment without JOBMETRICS_* settings, the repo importable, the instance given."""
    env = {k: v for k, v in os.environ.items() if "JOBMETRICS" not in k and not k.startswith("FLASK_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env["EXAMPLE_APP_INSTANCE"] = str(instance)
    return env


def _run(args: list[str], cwd: Path) -> str:
    """Run ``args`` in ``cwd``; assert exit status 0 and return stdout."""
    done = subprocess.run(
        args, cwd=cwd, env=_env(cwd / "instance"), capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, f"{args} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _client_rows(output: str) -> dict[str, list[str]]:
    """The client table of the demo's output: client ID -> the rest of its row, split on spaces."""
    rows: dict[str, list[str]] = {}
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Client runs ("))
    for line in lines[start + 3 :]:  # the heading, the column titles, the rule
        if not line.strip():
            break
        client, *rest = line.split()
        rows[client] = rest
    return rows


def _demo(cwd: Path) -> str:
    """Run the demo in ``cwd``, check what it printed, and return the run ID it printed."""
    output = _run([sys.executable, "-m", "example_app", "demo"], cwd)
    assert "batch lead scoring over 12 clients" in output
    found = re.search(r"^Run:\s+(\d{6}-\d{6})$", output, re.MULTILINE)
    assert found is not None, output
    assert re.search(r"^Status:\s+Completed with Errors$", output, re.MULTILINE), output
    assert re.search(r"^\s+Clients Processed\s+12$", output, re.MULTILINE), output
    assert re.search(r"^\s+Clients With Errors\s+1$", output, re.MULTILINE), output
    assert "Client runs (12):" in output

    rows = _client_rows(output)
    assert sorted(rows) == sorted(CLIENTS)
    # STATUS, START date, START time, DURATION, LEADS, PROFILES EXAMINED, PROFILES SCORED, ..., TOKENS
    acme = rows["acme"]
    assert acme[0] == "Completed"
    assert (acme[4], acme[5], acme[6], acme[10]) == ("120", "120", "108", "27,000")
    assert rows["initech"][0] == "Failed"
    assert "  Error Details: ScorerCrashed: model timeout while scoring lead 50 of initech" in output
    assert rows["hooli"][:3] == ["No", "Leads", "To"]
    assert "the store itself: instance/jobmetrics.sqlite3 (SQLite)" in output
    return found.group(1)


def test_demo_twice_then_runs_lists_both(tmp_path: Path) -> None:
    """The demo run twice in one directory records two runs there, and `jobmetrics runs` lists both."""
    first = _demo(tmp_path)
    second = _demo(tmp_path)
    assert first != second
    assert (tmp_path / "instance" / "jobmetrics.sqlite3").is_file()

    listing = _run([str(FLASK), "--app", "example_app", "jobmetrics", "runs"], tmp_path)
    listed = {line.split()[0]: line for line in listing.splitlines()[2:] if line.strip()}
    assert set(listed) == {first, second}
    for line in listed.values():
        assert "Completed with Errors" in line
        assert "12/12" in line
