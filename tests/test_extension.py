"""The extension: init_app, per-app state, service on current_app."""

from __future__ import annotations

import inspect
import pydoc
from pathlib import Path

import pytest
from flask import Flask

import flask_jobmetrics as fjm
from flask_jobmetrics import JobMetrics, MetricSpec, NotInitializedError, StoreError, operations
from flask_jobmetrics.service import MetricsService


def make_app(tmp_path: Path, name: str, **config: object) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / name))
    app.config.update(JOBMETRICS_STORE_URL="memory://", **config)
    return app


def test_state_lives_in_app_extensions(app: Flask) -> None:
    """init_app stores its state under app.extensions['jobmetrics']."""
    assert app.extensions["jobmetrics"].settings.store_url == "memory://"


def test_second_init_app_raises(app: Flask) -> None:
    """A second init_app on the same app raises RuntimeError."""
    with pytest.raises(RuntimeError, match="already"):
        JobMetrics().init_app(app)


def test_module_functions_act_on_current_app(app: Flask) -> None:
    """flask_jobmetrics.update_client_metrics works inside an app context."""
    with app.app_context():
        fjm.update_client_metrics("230615-120000", "acme", {"Leads Processed": 2})
        run = fjm.get_client_run("230615-120000", "acme")
    assert run is not None and run.metrics["Leads Processed"] == 2


def test_module_functions_need_an_app() -> None:
    """Outside an app context the module functions raise NotInitializedError."""
    with pytest.raises(NotInitializedError):
        fjm.get_job_run("230615-120000")


def test_app_without_init_app_raises(tmp_path: Path) -> None:
    """An app that never ran init_app gives NotInitializedError naming it."""
    with make_app(tmp_path, "bare").app_context(), pytest.raises(NotInitializedError, match="bare"):
        fjm.get_job_run("230615-120000")


def test_object_bound_to_one_app_works_without_context(tmp_path: Path) -> None:
    """JobMetrics(app) methods work outside an app context (background threads, scripts)."""
    ext = JobMetrics(make_app(tmp_path, "solo"))
    ext.update_client_metrics("230615-120000", "acme", {"Leads Processed": 1})
    assert ext.get_client_run("230615-120000", "acme") is not None


def test_one_object_serves_several_apps_independently(tmp_path: Path) -> None:
    """Each app has its own store; the object acts on the app of the context."""
    ext = JobMetrics()
    first, second = make_app(tmp_path, "one"), make_app(tmp_path, "two")
    ext.init_app(first)
    ext.init_app(second)
    with first.app_context():
        ext.update_client_metrics("230615-120000", "acme", {"Leads Processed": 1})
    with second.app_context():
        assert ext.get_client_run("230615-120000", "acme") is None
    with pytest.raises(NotInitializedError, match="several"):
        ext.get_job_run("230615-120000")


def test_register_metric_applies_to_present_and_future_apps(tmp_path: Path) -> None:
    """register_metric reaches apps initialised before and after it."""
    ext = JobMetrics()
    before = make_app(tmp_path, "before")
    ext.init_app(before)
    ext.register_metric(MetricSpec(name="Apify Cost", field="Apify API Costs"))
    after = make_app(tmp_path, "after")
    ext.init_app(after)
    for app in (before, after):
        with app.app_context():
            run = ext.update_client_metrics("230615-120000", "acme", {"apify_cost": 2})
        assert run.metrics == {"Apify API Costs": 2}


def test_default_store_is_sqlite_in_the_instance_folder(tmp_path: Path) -> None:
    """Without JOBMETRICS_STORE_URL the store is <instance>/jobmetrics.sqlite3."""
    app = Flask("default_store", instance_path=str(tmp_path / "inst"))
    ext = JobMetrics(app)
    ext.start_job("230615-120000")
    ext.flush()
    assert (tmp_path / "inst" / "jobmetrics.sqlite3").exists()


def test_unusable_store_fails_at_init_app(tmp_path: Path) -> None:
    """A store file that is not a database gives StoreError at init_app, not at the first update."""
    bogus = tmp_path / "not-a-db.sqlite3"
    bogus.write_text("hello, I am a text file" * 100)
    app = Flask("bogus", instance_path=str(tmp_path))
    app.config["JOBMETRICS_STORE_URL"] = f"sqlite:///{bogus}"
    with pytest.raises(StoreError, match="not-a-db"):
        JobMetrics(app)


def test_stats_counts_buffered_updates(app: Flask) -> None:
    """stats() reports this process's buffer counters."""
    with app.app_context():
        fjm.update_client_metrics("230615-120000", "acme", {"Leads Processed": 1})
        fjm.update_client_metrics("230615-120000", "acme", {"Leads Processed": 1})
        stats = fjm.stats()
    assert stats.added == 2 and stats.buffered == 1


#: The service operations (operations.__all__ also has register_metric and stats, which are not).
OPERATIONS = [name for name in operations.__all__ if hasattr(MetricsService, name)]


@pytest.mark.parametrize("name", OPERATIONS)
def test_operations_show_the_services_parameters(name: str) -> None:
    """help() and inspect show a JobMetrics method and module function with the service's parameters."""
    service = list(inspect.signature(getattr(MetricsService, name)).parameters.values())
    assert list(inspect.signature(getattr(JobMetrics, name)).parameters.values()) == service
    assert list(inspect.signature(getattr(fjm, name)).parameters.values()) == service[1:]
    assert "**kwargs" not in pydoc.render_doc(getattr(JobMetrics, name))


def test_a_bare_import_loads_no_optional_backend() -> None:
    """A bare import loads none of pyairtable, requests, redis, prometheus_client or the dashboard."""
    import subprocess
    import sys

    lazy = ["pyairtable", "requests", "redis", "prometheus_client", "flask_jobmetrics.dashboard.views"]
    probe = f"import sys, flask_jobmetrics; print([m for m in {lazy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_bare_import_loads_no_pydantic() -> None:
    """A bare import loads neither pydantic nor the models: they load with the first model."""
    import subprocess
    import sys

    probe = (
        "import sys, flask_jobmetrics; "
        "print([m for m in ('pydantic', 'flask_jobmetrics.models') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_model_names_of_the_package_are_the_pydantic_models() -> None:
    """The package's model names, read one by one or by ``import *``, are the pydantic models."""
    import pydantic

    from flask_jobmetrics import ClientRun, FlushReport, Health, JobRun, RejectedMetric, Status, models

    names = {"ClientRun": ClientRun, "FlushReport": FlushReport, "Health": Health, "JobRun": JobRun}
    names["RejectedMetric"] = RejectedMetric
    for name, value in names.items():
        assert value is getattr(models, name)
        assert issubclass(value, pydantic.BaseModel)
    assert Status is models.Status
    star: dict[str, object] = {}
    exec("from flask_jobmetrics import *", star)
    assert {name: star[name] for name in names} == names
    assert set(fjm.__all__) <= set(dir(fjm))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchModel'"):
        fjm.NoSuchModel  # noqa: B018


def test_the_first_views_of_a_fresh_interpreter_are_client_runs() -> None:
    """In a fresh interpreter, the first updates (from several threads at once) return ClientRuns."""
    import subprocess
    import sys

    probe = """
import sys, threading
import flask_jobmetrics
from flask_jobmetrics.service import MetricsService
from flask_jobmetrics.stores import load_store
service = MetricsService(load_store("memory://"), buffer_ttl=3600, flush_interval=3600)
runs = []
def update(n):
    runs.append(service.update_client_metrics("250101-120000", f"c{n}", {"leads_processed": n}))
threads = [threading.Thread(target=update, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
from flask_jobmetrics import ClientRun
assert len(runs) == 8 and all(isinstance(r, ClientRun) for r in runs)
print(sorted(r.metrics["Leads Processed"] for r in runs))
print(service.get_job_run("250101-120000").client_ids[:2], service.health().store_available)
service.close()
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[0, 1, 2, 3, 4, 5, 6, 7]", "['c0', 'c1'] True"]
