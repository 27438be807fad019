"""The report stage attaches what it wrote to an MLflow run of its own, `report/<preset>`, in a real MLflow
SQLite store; a rebuilt report becomes the current one, and neither is read back as a training run."""

from __future__ import annotations

import mlflow

from cifarbench.config import TrackingConfig
from cifarbench.params import parse
from cifarbench.report.build import report_stage
from cifarbench.tracking.read import load_runs
from small_params import small_params
from test_report_disclosure import log_baseline_runs


def test_report_stage_attaches_the_report_to_a_run_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = small_params(presets__default__test_skip=2000, presets__default__seeds=[0])
    tree["architectures"] = {"lenet5": tree["architectures"]["lenet5"]}
    tree["ablations"] = {"baseline": tree["ablations"]["baseline"]}
    params = parse(tree)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = TrackingConfig(uri=uri)
    log_baseline_runs(params.plan, tracking)
    for _ in range(2):
        report_stage(params.plan, tracking, out=tmp_path / "reports")
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.experiment).experiment_id
    reports = client.search_runs([experiment], "attributes.run_name = 'report/default'", order_by=["start_time ASC"])
    assert len(reports) == 2
    old, new = reports
    assert new.info.status == "FINISHED"
    assert {k: new.data.tags[k] for k in ("preset", "runs_read", "cifarbench.kind", "cifarbench.current")} == {
        "preset": "default", "runs_read": "1", "cifarbench.kind": "report", "cifarbench.current": "true"}
    assert new.data.tags["git_commit"] and old.data.tags["cifarbench.current"] == "false"
    files = {f.path for f in client.list_artifacts(new.info.run_id)}
    assert {"comparison.md", "comparison.html", "metrics.json", "runs.csv", "figures"} <= files
    figures = {f.path for f in client.list_artifacts(new.info.run_id, "figures")}
    assert figures == {f"figures/{p.name}" for p in (tmp_path / "reports" / "figures").iterdir()} and figures
    assert list(load_runs(uri, tracking.experiment, "default")["run_name"]) == ["lenet5/baseline/seed0"]
