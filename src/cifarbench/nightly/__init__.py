"""The nightly benchmark job: run the pipeline under the `nightly` preset, compare every (architecture,
ablation) cell with a stored baseline, keep a history of nights and write `reports/nightly.md` (+ HTML).

    cifarbench nightly [--preset nightly] [--update-baseline] [--no-run]

Modules, one idea each:
    config.py    the `nightly:` section of params.yaml (thresholds and where the files live)
    compare.py   pure functions: per-cell summaries of tonight's runs, and the noise-aware comparison
    store.py     baseline.json and the history, one small JSON file per night
    override.py  running the pipeline under another preset without leaving params.yaml edited
    report.py    the markdown/HTML report with a trend plot per architecture
    command.py   `cifarbench nightly`: the above in order, and the exit code

How the preset is overridden (override.py). `dvc exp run -S preset=nightly` writes the new value into the
workspace's params.yaml and leaves it there after the run (the experiment is the workspace); `--temp`
avoids that but runs in a copy under .dvc/tmp/exps from which git-ignored files are absent (data/,
mlflow.db, runs/): the MLflow runs land in a throwaway SQLite file, and the outputs come back only through
`dvc exp apply`. Experiments also need a git committer identity, which a CI checkout does not have. So
the job runs plain `dvc repro --no-run-cache train` with `preset:` set for the duration of the run only:
params.yaml and dvc.lock are restored byte for byte afterwards (also on Ctrl-C and SIGTERM, which is
how CI cancels a job), so the user's preset, its pipeline state and `dvc status` are as they were. Only
`train` (and what it depends on: data, tuning) runs; the `report` stage would overwrite the user's
reports/comparison.*, and the nightly writes its own report. `--no-run-cache` because a nightly is a
measurement: a cell is trained tonight, not restored from an earlier identical run. The runs land in
runs/<preset>/ and in MLflow tagged preset=<preset>, like any other preset's.

History (store.py): one JSON file per night in `reports/nightly/history/`, not an MLflow experiment: a
few KB per night, readable in a diff and in a pull request, and it travels with the repository or the CI
cache without a tracking server (a fresh CI runner has an empty mlflow.db).
"""
