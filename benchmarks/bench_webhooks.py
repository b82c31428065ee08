"""Signed harvest webhooks per second through gunicorn: SQLite vs Redis, 1 vs 4 workers.

Each configuration starts the example app (``example_app:create_app()``) under
``gunicorn -w N`` on a free port with a fresh SQLite file or a fresh Redis key prefix and
Airtable off (no API key: the benchmark measures our path, not an Airtable emulator). Client
threads (one ``http.client`` connection each; gunicorn's sync workers close it after every
response) send ``--requests`` signed deliveries to ``POST /webhooks/harvest/<client>``, each
with its own event ID, all for one run and a few clients. Bodies and signatures are built
before the clock starts. After each configuration the benchmark opens the store itself and
checks that every client's ``Total Posts Harvested`` is exactly the number of posts sent.

Anchor: SQLite with one worker (the default store), measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from _common import REDIS_URL, TIMES, Gunicorn, delete_redis_prefix, header, percentile, table  # noqa: E402

from example_app.harvest import harvest_delivery  # noqa: E402
from flask_jobmetrics.stores.base import Store  # noqa: E402
from flask_jobmetrics.stores.redis import RedisStore  # noqa: E402
from flask_jobmetrics.stores.sqlite import SQLiteStore  # noqa: E402

RUN_ID = "250612-093015"
CLIENTS = ("acme", "globex", "umbrella", "wayne")
SECRETS = {client: f"{client}-bench-secret" for client in CLIENTS}
FIELD = "Total Posts Harvested"
WARMUP = 20  # per configuration, counted in the expected totals, not in the timing


@dataclass
class Delivery:
    client: str
    path: str
    body: bytes
    headers: dict[str, str]
    posts: int


@dataclass
class Outcome:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: dict[str, int] = field(default_factory=dict)
    exact: bool = False
    detail: str = ""
    client_cpu: float = 0.0
    server_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def deliveries(tag: str, count: int) -> list[Delivery]:
    """``count`` signed deliveries, deterministic but for ``tag`` (part of each event ID)."""
    out = []
    for i in range(count):
        client = CLIENTS[i % len(CLIENTS)]
        posts = [{"url": f"https://example.com/{client}/{i}/{n}"} for n in range(1 + i % 5)]
        signed = harvest_delivery(client, RUN_ID, f"evt-{tag}-{i:07d}", posts, SECRETS[client])
        out.append(Delivery(client, signed.path, signed.body, signed.headers, len(posts)))
    return out


def send_all(port: int, items: list[Delivery], threads: int) -> tuple[float, list[float], dict[str, int]]:
    """Send ``items`` with ``threads`` threads; (seconds, latencies, errors by kind)."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    cursor = iter(range(len(items)))
    start_gate = threading.Barrier(threads + 1)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        start_gate.wait()
        while True:
            with lock:
                i = next(cursor, None)
            if i is None:
                break
            item = items[i]
            began = time.perf_counter()
            try:
                conn.request("POST", item.path, body=item.body, headers=item.headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                status = type(exc).__name__
            mine.append(time.perf_counter() - began)
            if status != "200":
                with lock:
                    errors[status] = errors.get(status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    start_gate.wait()
    began = time.perf_counter()
    for t in pool:
        t.join()
    return time.perf_counter() - began, latencies, errors


def check_totals(store: Store, items: list[Delivery]) -> tuple[bool, str]:
    expected: dict[str, int] = {}
    for item in items:
        expected[item.client] = expected.get(item.client, 0) + item.posts
    wrong = []
    for client, total in expected.items():
        row = store.get_client(RUN_ID, client)
        got = None if row is None else row.fields.get(FIELD)
        if got != total:
            wrong.append(f"{client}: stored {got}, sent {total}")
    posts = sum(expected.values())
    return not wrong, "; ".join(wrong) or f"{posts:,} posts in {len(expected)} client rows"


@dataclass
class Config:
    """One configuration: its store, its server, its deliveries and what they measured."""

    backend: str
    workers: int
    url: str
    prefix: str
    server: Gunicorn
    warmup: list[Delivery]
    timed: list[Delivery]
    outcome: Outcome


def start_config(backend: str, workers: int, requests: int, redis_url: str, tmp: Path) -> Config:
    tag = f"{backend}{workers}"
    if backend == "sqlite":
        url, prefix = f"sqlite:///{tmp}/{tag}.sqlite3", ""
    else:
        prefix = f"bench-webhooks-{uuid.uuid4().hex[:8]}:"
        url = f"{redis_url}?prefix={prefix}"
    env = {
        "JOBMETRICS_STORE_URL": url,
        "JOBMETRICS_WEBHOOK_SECRETS": json.dumps(SECRETS),
        "JOBMETRICS_AIRTABLE_API_KEY": "",
        "JOBMETRICS_AIRTABLE_BASE_ID": "",
        "EXAMPLE_APP_INSTANCE": str(tmp / f"instance-{tag}"),
    }
    server = Gunicorn("example_app:create_app()", workers, env, tmp / f"gunicorn-{tag}.log")
    outcome = Outcome(f"{backend}{TIMES}{workers}", 0, 0.0, [])
    return Config(
        backend,
        workers,
        url,
        prefix,
        server,
        deliveries(f"{tag}-warm", WARMUP),
        deliveries(tag, requests),
        outcome,
    )


def run_round(config: Config, items: list[Delivery], threads: int) -> None:
    """Send one round of ``config``'s deliveries and add what it measured to its outcome."""
    o = config.outcome
    server_before, client_before = config.server.workers_cpu(), time.process_time()
    seconds, latencies, errors = send_all(config.server.port, items, threads)
    o.server_cpu += config.server.workers_cpu() - server_before
    o.client_cpu += time.process_time() - client_before
    o.requests += len(items)
    o.seconds += seconds
    o.latencies += latencies
    for kind, count in errors.items():
        o.errors[kind] = o.errors.get(kind, 0) + count


def check_config(config: Config) -> None:
    """Open the store from this process and compare the totals (while the server runs)."""
    store: Store = SQLiteStore(config.url) if config.backend == "sqlite" else RedisStore(config.url)
    try:
        config.outcome.exact, config.outcome.detail = check_totals(store, config.warmup + config.timed)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="timed requests per configuration (default 3000)"
    )
    parser.add_argument("--threads", type=int, default=8, help="client threads (default 8)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="the requests of each configuration are sent in this many rounds, the configurations "
        "taking turns (all four servers run side by side); default 5",
    )
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"Redis server (default {REDIS_URL})")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (gunicorn logs, SQLite files); kept anyway if a server fails",
    )
    args = parser.parse_args(argv)
    print(header("bench_webhooks: signed harvest webhooks through gunicorn", argv))
    print(
        f"{args.requests:,} timed requests per configuration (+{WARMUP} warm-up), {args.threads} client "
        f"threads (http.client, one process), {len(CLIENTS)} clients, one run, 1-5 posts per delivery, "
        "a distinct event ID each; Airtable off; gunicorn sync workers; "
        f"the 4 servers run side by side and take turns in {args.rounds} rounds\n"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    configs = [
        start_config(backend, workers, args.requests, args.redis_url, tmp)
        for backend in ("sqlite", "redis")
        for workers in (1, 4)
    ]
    try:
        for config in configs:
            config.server.wait_ready()
            send_all(config.server.port, config.warmup, args.threads)
        rounds = max(1, min(args.rounds, args.requests))
        for r in range(rounds):
            # a rotating order: a change in the machine's background load hits every configuration
            for k in range(len(configs)):
                config = configs[(r + k) % len(configs)]
                share = config.timed[r * args.requests // rounds : (r + 1) * args.requests // rounds]
                run_round(config, share, args.threads)
        for config in configs:
            check_config(config)
    finally:
        for config in configs:
            config.server.stop()
            if config.prefix:
                delete_redis_prefix(args.redis_url, config.prefix)
    outcomes = [config.outcome for config in configs]
    for o in outcomes:
        print(f"  {o.name}: {o.rate:,.0f} req/s, totals {'exact' if o.exact else 'WRONG'}")
    print()
    anchor = outcomes[0].rate
    rows = []
    for o in outcomes:
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(o.errors.items())) or "0"
        rows.append(
            (
                o.name,
                f"{o.requests:,}",
                f"{o.seconds:.2f}",
                f"{o.rate:,.0f}",
                f"{o.rate / anchor:.2f}{TIMES}",
                f"{percentile(o.latencies, 50) * 1000:.1f}",
                f"{percentile(o.latencies, 95) * 1000:.1f}",
                errors,
                "✓" if o.exact else "✗",
            )
        )
    print(
        table(
            [
                "config",
                "requests",
                "seconds",
                "req/s",
                f"ratio to sqlite{TIMES}1",
                "p50 ms",
                "p95 ms",
                "non-200",
                "exact",
            ],
            rows,
        )
    )
    print()
    print(
        "CPU during the timed part (2 cores = 200 %): "
        "server = gunicorn master + workers, client = this process"
    )
    for o in outcomes:
        print(
            f"  {o.name}: {o.detail}; server {o.server_cpu / o.seconds:.0%} "
            f"({o.server_cpu / o.requests * 1e6:,.0f} µs CPU/request), client {o.client_cpu / o.seconds:.0%} "
            f"({o.client_cpu / o.requests * 1e6:,.0f} µs CPU/request)"
        )
    if args.keep:
        print(f"\nlogs and SQLite files kept in {tmp}")
    else:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(o.exact and not o.errors for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
