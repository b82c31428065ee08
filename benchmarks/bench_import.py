"""``import flask_jobmetrics`` in a fresh interpreter, against ``import flask``.

Each sample starts a fresh ``python -c "import X"`` (the venv's interpreter, no ``-X
importtime`` noise) and reads the CPU time the child used (user + system, from
``os.wait4``), so the machine's other load barely moves it; the interpreter's own start-up
(``python -c pass``) is subtracted. The **anchor**, ``import flask``, and ``import
flask_jobmetrics`` take turns, ``--samples`` each. Reported: the median of each and the
difference (target <= 150 ms more than flask), and which of pydantic, pyairtable, requests,
redis, prometheus_client and the dashboard a bare import loads (none should: they load when
used).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import ROOT, TIMES, header, table  # noqa: E402

LAZY = [
    "pydantic",
    "pyairtable",
    "requests",
    "redis",
    "prometheus_client",
    "flask_jobmetrics.dashboard.views",
]


def cpu_of(code: str) -> float:
    """CPU seconds (user + system) a fresh interpreter spends running ``code``."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"python -c {code!r} failed")
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=15, help="fresh interpreters per import (default 15)")
    args = parser.parse_args(argv)
    print(header("bench_import: import flask_jobmetrics vs import flask, fresh interpreters", argv))
    print(f"{args.samples} samples each, taking turns; CPU ms of the child, less `python -c pass`\n")
    cases = {
        "python -c pass": "pass",
        "import flask": "import flask",
        "import flask_jobmetrics": "import flask_jobmetrics",
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.samples):
        for name, code in cases.items():
            samples[name].append(cpu_of(code))
    base = statistics.median(samples["python -c pass"])
    med = {name: (statistics.median(v) - base) * 1e3 for name, v in samples.items()}
    rows = [
        ("import flask (anchor)", f"{med['import flask']:.0f}", "", ""),
        (
            "import flask_jobmetrics",
            f"{med['import flask_jobmetrics']:.0f}",
            f"{med['import flask_jobmetrics'] - med['import flask']:+.0f}",
            f"{med['import flask_jobmetrics'] / med['import flask']:.2f}{TIMES}",
        ),
    ]
    print(table(["import", "median CPU ms", "vs flask ms", "ratio"], rows))
    probe = (
        f"import sys, json, flask_jobmetrics; print(json.dumps([m for m in {LAZY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout)
    print(f"\nloaded by a bare import (of {', '.join(LAZY)}): {', '.join(loaded) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
