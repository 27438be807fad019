"""The nightly benchmark job: run the pipeline under the `nightly` preset, compare every (architecture,
ablation) cell with a stored baseline, keep a history of nights and write `reports/nightly.md` (+ HTML).

    cifarbench nightly [--preset nightly] [--update-baseline] [--no-run]

Modules, one idea each (`cifarbench nightly`, which runs them in order, is cifarbench.commands.nightly):
    config.py    the `nightly:` section of params.yaml (thresholds and where the files live)
    compare.py   pure functions: per-cell summaries of tonight's runs, and the noise-aware comparison
    store.py     baseline.json (the one comparable tonight) and the history, one small JSON file per night
    worktree.py  the nightly's own git worktree, where the pipeline runs under the nightly preset
    report.py    the markdown/HTML report with a trend plot per architecture

Where the pipeline runs (worktree.py): `dvc repro --no-run-cache train` in a git worktree of the user's
commit at `.dvc/tmp/nightly/` (git-ignored; reset to HEAD each night, rebuilt when broken), whose params.yaml
is the user's (uncommitted edits included) with only `preset:` switched, written there atomically. The
user's params.yaml and dvc.lock are only read: no kill, OOM or CI timeout can leave them changed, and the
user may run `dvc repro` meanwhile. The worktree shares the user's DVC cache (`dvc cache dir --local`; data
stages recorded in the user's dvc.lock, copied in, are checked out rather than downloaded again), MLflow
store and Optuna storage (relative paths made absolute: MLFLOW_TRACKING_URI, CIFARBENCH_OPTUNA_STORAGE), so
tonight's runs land where the comparison reads them; its runs/ outputs stay in the worktree. Code is the
commit (the stages import the worktree's src/ first): other uncommitted changes are not benchmarked, and
the nightly says so. An flock (`.dvc/tmp/nightly.lock`), inherited by `dvc repro`, keeps a second nightly
out while one, or the pipeline of a killed one, still runs. SIGTERM/SIGHUP of the nightly are passed to
every process of the pipeline. Not `dvc exp run -S preset=nightly`: it leaves the value in the workspace's
params.yaml (the experiment is the workspace); `--temp` runs in a copy from which git-ignored files are
absent (data/, mlflow.db: the runs land in a throwaway store) and needs a git committer identity, which a CI
checkout does not have. Only `train` (and what it depends on: data, tuning) runs; the `report` stage would
rewrite the comparison report, and the nightly writes its own. `--no-run-cache` because a nightly is a
measurement: a cell is trained tonight, not restored from an earlier identical run. The runs land in MLflow
tagged preset=<preset>, like any other preset's.

History (store.py): one JSON file per night in `reports/nightly/history/`, not an MLflow experiment: a
few KB per night, readable in a diff and in a pull request, and it travels with the repository or the CI
cache without a tracking server (a fresh CI runner has an empty mlflow.db). The baseline is read before the
pipeline runs, so an unreadable one stops the night at once with the file named; an unreadable history file
is skipped with a warning naming it (it only feeds the trend plot).
"""
