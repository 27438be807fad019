"""The train stage's bookkeeping: the progress line's ETA from the cost model, a cell's summary that
never averages a run that did not train, and outputs of cells no longer planned kept unless pruned."""

from __future__ import annotations

import pytest

from cifarbench.params import parse
from cifarbench.pipeline import cell_cost, measured_cost, summarize
from cifarbench.plan import all_cells
from small_params import small_params
from cifarbench.progress import Progress, clock


def test_progress_scales_elapsed_time_by_the_cost_left(monkeypatch):
    clock = iter([100.0, 160.0, 220.0])
    monkeypatch.setattr("cifarbench.progress.time.monotonic", lambda: next(clock))
    progress = Progress([3.0, 1.0, 2.0])
    assert progress.finished(3.0) == "[1/3, 1:00 elapsed, ~1:00 left]"  # 3 of 6 cost units in 60 s
    assert progress.finished(2.0) == "[2/3, 2:00 elapsed, ~0:24 left]"  # 1 unit left at 5 units per 120 s


def test_progress_of_trials_counts_a_pruned_one_at_its_cost_spent_and_one_queued_again(monkeypatch):
    clock_at = iter([0.0, 30.0, 90.0, 150.0])
    monkeypatch.setattr("cifarbench.progress.time.monotonic", lambda: next(clock_at))
    progress = Progress([4.0, 4.0, 4.0], unit="trials")
    # pruned after 1 of its 4 epochs: 1 unit spent in 30 s; the two trials to come are counted whole (8 units)
    assert progress.finished(1.0, planned=4.0) == "[1/3 trials, 0:30 elapsed, ~4:00 left]"
    progress.add(4.0)  # a dead coordinator's trial queued again: one more to run
    assert progress.finished(4.0) == "[2/4 trials, 1:30 elapsed, ~2:24 left]"  # 8 units left at 5 per 90 s
    assert progress.finished(0.0, planned=4.0) == "[3/4 trials, 2:30 elapsed, ~2:00 left]"  # a failed trial



def _entry(speed: float) -> dict:
    return {"choice": "bf16", "measured": {"fp32": 1.0, "bf16": speed}}


def test_a_runs_cost_is_its_images_over_the_speed_measured_for_its_architecture():
    cells = [c for c in all_cells(parse(small_params(preset="default")).plan) if c.not_applicable is None]
    archs = {c.arch for c in cells}
    cost = measured_cost(cells, {arch: _entry(500.0) for arch in archs} | {"vgg11": _entry(250.0)})
    for cell in cells:
        if cell.ablation == "baseline":  # seconds: epochs x training images / the chosen path's images/s
            speed = 250.0 if cell.arch == "vgg11" else 500.0
            assert cost(cell) == pytest.approx(cell.train.epochs * cell.budget.train_subset / speed)
    base = {c.arch: c for c in cells if c.ablation == "baseline"}
    for cell in cells:  # another model of the same family: scaled by the FLOP-and-layer term, as cell_cost is
        assert cost(cell) / cost(base[cell.arch]) == pytest.approx(cell_cost(cell) / cell_cost(base[cell.arch]))
    # an architecture the probe did not time (a GPU run, fast paths off): one unit for all, never a mix
    assert measured_cost(cells, {"vgg11": _entry(250.0)}) is cell_cost


def test_clock_reads_minutes_and_hours():
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600, 36061)] == ["0:00", "1:00", "1:01", "59:59", "1:00:00", "10:01:01"]


def _seed(acc: float, status: str = "completed", did_not_train: str = "") -> dict:
    return {"test_acc": acc, "status": status, "train_seconds": 1.0, "did_not_train": did_not_train}


def test_a_run_that_did_not_train_is_counted_but_never_averaged():
    out = summarize({0: _seed(0.5), 1: _seed(0.7), 2: _seed(0.0965, did_not_train="one class predicted")})
    assert out["test_acc_mean"] == pytest.approx(0.6) and out["n_seeds"] == 2 and out["did_not_train"] == 1
    assert out["status"] == "completed" and set(out["seeds"]) == {"0", "1", "2"}
    diverged = summarize({0: _seed(0.1, "diverged", "the training loss stopped being finite")})
    assert diverged["status"] == "diverged" and diverged["test_acc_mean"] is None and diverged["did_not_train"] == 1


def test_outputs_of_cells_no_longer_planned_are_found_for_keeping_or_pruning(tmp_path, monkeypatch):
    from cifarbench.params import parse
    from cifarbench.pipeline import _stale_outputs
    from cifarbench.plan import all_cells
    from small_params import small_params

    monkeypatch.chdir(tmp_path)
    cells = all_cells(parse(small_params(preset="smoke")).plan)
    for arch, ablation in (("lenet5", "baseline"), ("lenet5", "dropped")):
        (tmp_path / "runs/smoke/cells" / arch / ablation).mkdir(parents=True)
        for kind, suffix in (("metrics", ".json"), ("curves", ".csv")):
            (tmp_path / "runs/smoke" / kind / arch).mkdir(parents=True, exist_ok=True)
            (tmp_path / "runs/smoke" / kind / arch / f"{ablation}{suffix}").write_text("{}")
    stale = sorted(str(p) for p in _stale_outputs("smoke", cells))
    assert stale == ["runs/smoke/cells/lenet5/dropped", "runs/smoke/curves/lenet5/dropped.csv",
                     "runs/smoke/metrics/lenet5/dropped.json"]
    assert (tmp_path / "runs/smoke/cells/lenet5/dropped").is_dir()  # finding them removes nothing
