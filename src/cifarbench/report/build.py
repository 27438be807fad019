"""The `report` stage (`cifarbench report`: cifarbench.commands.report): gather the current runs of the plan
from MLflow, build the document, write reports/ atomically.

    reports/comparison.md     GitHub-rendered; figures linked from reports/figures/
    reports/comparison.html   one self-contained file (figures inline): open it in any browser
    reports/figures/*.png
    reports/metrics.json      headline numbers for `dvc metrics show`
    reports/runs.csv          every run the report counts, one row each (for re-analysis: pandas.read_csv)

and attach them to an MLflow run `report/<preset>` of their own (cifarbench.tracking.reports).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from cifarbench.config import TrackingConfig
from cifarbench.io import atomic_path, pid_alive, write_json_atomic
from cifarbench.paths import DVC_LOCK, REPORTS
from cifarbench.plan import PlanConfig, all_cells, read_tuned_values
from cifarbench.redact import mask_credentials
from cifarbench.report import tables
from cifarbench.report.render import Image, to_html, to_markdown
from cifarbench.report.sections import Inputs, document
from cifarbench.tracking import Tracker, log_report, provenance, tracking_uri
from cifarbench.tracking.read import load_confusions, load_histories, load_runs, load_tuning
from cifarbench.tracking.tags import GIT_COMMIT, GIT_DIRTY

ATTACHED = ("comparison.md", "comparison.html", "metrics.json", "runs.csv")  # with figures/: the report's MLflow run


def gather(plan: PlanConfig, tracking: TrackingConfig) -> Inputs:
    tuned = read_tuned_values(plan, missing_ok=True)  # a study not yet run: no cell taking it has run either
    expected = tables.expected_cells(all_cells(plan, tuned), plan.ablations)
    uri = tracking_uri(tracking)
    runs, left_out = tables.select_current(load_runs(uri, tracking.experiment, plan.preset), expected)
    here = provenance()
    return Inputs(
        preset=plan.preset, archs=list(plan.architectures), ablations=tables.measured_ablations(expected), expected=expected,
        runs=runs, left_out=left_out, histories=load_histories(uri, runs),
        studies=load_tuning(uri, tracking.experiment, plan.preset), tuned=tuned, plan=plan,
        confusions=load_confusions(uri, tables.trained_baselines(runs)["run_id"]),
        provenance={
            "git commit of this report": here[GIT_COMMIT] + (" (dirty work tree)" if here[GIT_DIRTY] == "true" else ""),
            "dvc.lock sha256 (first 16)": _digest(DVC_LOCK),
            "MLflow store / experiment": f"{shown_store(uri)} / {tracking.experiment}",
        },
    )  # fmt: skip




def shown_store(uri: str) -> str:
    """The tracking URI as the report shows it: no credentials, and a SQLite file inside the project by its path
    relative to the project (the report is committed: no one else's machine has /home/you/...)."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        path = Path(uri.removeprefix(prefix))
        if path.is_absolute() and path.is_relative_to(Path.cwd()):
            return prefix + path.relative_to(Path.cwd()).as_posix()
    return mask_credentials(uri)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "no dvc.lock"


def write_report(inputs: Inputs, out: Path = REPORTS) -> dict:
    """Write every output of the report into `out`; returns the metrics written to metrics.json."""
    doc, metrics = document(inputs)
    images = [b for s in doc.sections for b in s.blocks if isinstance(b, Image)]
    _replace_folder(out / "figures", {image.name: image.png for image in images})
    for name, text in (("comparison.md", to_markdown(doc)), ("comparison.html", to_html(doc))):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    write_json_atomic(out / "metrics.json", metrics)
    with atomic_path(out / "runs.csv") as tmp:
        runs_table(inputs.runs).to_csv(tmp, index=False)
    return metrics


def runs_table(runs):
    """The runs the report counts, one row each: identity, outcome, cost and config, plain column names
    (`metrics.`, `params.` and `tags.` prefixes dropped, MLflow's bookkeeping left out)."""
    keep = [c for c in runs.columns if c.startswith(("metrics.", "params.")) or c in
            ("run_id", "arch", "ablation", "seed", "status", "tags.trained", "tags.did_not_train", "tags.config_hash",
             "tags.host_cpu", "tags.git_commit", "tags.data_md5")]
    table = runs[keep].rename(columns=lambda c: c.split(".", 1)[1] if c.startswith(("metrics.", "tags.")) else c)
    return table.sort_values(["arch", "ablation", "seed"], kind="stable")


def _replace_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Fill a fresh temporary folder, then swap it in: no stale figure of an earlier plan survives. A kill
    between the two renames leaves no `folder` (never a half-filled one); the next report makes it whole.
    Leftovers of killed reports (`.figures.<pid>.tmp/.old`) are removed."""
    for stale in folder.parent.glob(f".{folder.name}.*.*") if folder.parent.is_dir() else []:
        pid = stale.name.split(".")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def report_stage(plan: PlanConfig, tracking: TrackingConfig, out: Path = REPORTS) -> dict:
    """Write the report into `out` and attach it to an MLflow run of its own (`report/<preset>`)."""
    inputs = gather(plan, tracking)
    metrics = write_report(inputs, out)
    runs = metrics["runs"]
    run_id = log_report(Tracker.open(tracking), plan.preset, runs["found"],
                        [out / name for name in ATTACHED], [out / "figures"])
    print(f"report: {out / 'comparison.html'} and comparison.md, {runs['found']} of {runs['planned']} runs, "
          f"{runs['missing']} missing, {runs['left_out']} left out; MLflow run report/{plan.preset} {run_id}", flush=True)
    return metrics
