"""The tune stage: every study of the preset at once (each architecture's baseline, and each `tune: own`
ablation's cell the preset runs: plan.tuning_targets), all studies' trials fanned out over the executor
(`cifarbench tune` and `stages/tune.py`: cifarbench.commands.tune); writes runs/<preset>/tuned/<arch>.json and, per own
study, runs/<preset>/tuned/<arch>/<ablation>.json."""

from __future__ import annotations

from cifarbench.config import TrackingConfig
from cifarbench.errors import CifarbenchError
from cifarbench.execute import ExecutorConfig, running
from cifarbench.io import write_json_atomic
from cifarbench.paths import PREPARED, tuned_path
from cifarbench.pipeline import cell_cost, checked_cells
from cifarbench.plan import PlanConfig, tuning_targets
from cifarbench.progress import Progress
from cifarbench.tracking import Tracker
from cifarbench.tuning.config import TuneConfig
from cifarbench.tuning.search import Search, make_search
from cifarbench.tuning.storage import shown, storage_url
from cifarbench.tuning.study import Study, summarize
from cifarbench.tuning.trial import quiet, run_trial


def tune_stage(plan: PlanConfig, cfg: TuneConfig, tracking: TrackingConfig, executor: ExecutorConfig,
               archs: list[str] | None = None) -> dict[str, dict]:
    """Tune the lr and weight decay of every study the preset runs (of `archs` only, if given), all studies'
    trials fanned out over the executor; writes each tuned file and returns their contents by study key
    (plan.tuned_key: `vgg11`, `vgg11/no_bn`)."""
    quiet()
    checked_cells(plan)  # bad params fail here, before any training
    url = storage_url(cfg)
    searches = [make_search(plan, cfg, arch, url, ablation) for arch, ablation in tuning_targets(plan)
                if archs is None or arch in archs]
    out = {}
    for search in [s for s in searches if s.trials == 0]:
        out[search.key] = _write_tuned(search, summarize(None, search, shown(url)))
        print(f"tune {search.key}: preset {plan.preset} does not tune; the recipe's lr and weight decay stand")
    searches = [s for s in searches if s.trials > 0]
    if not searches:
        return out
    tracker = Tracker.open(tracking)
    studies = {s.key: Study(s, cfg, url, tracker) for s in searches}
    print(f"tune ({plan.preset}): {len(studies)} studies in {shown(url)}, "
          f"{', '.join(f'{s.key} {s.trials} x {s.cell.train.epochs} ep' for s in searches)}", flush=True)
    _run_studies(studies, executor, gpu=any(s.cell.train.device != "cpu" for s in searches))
    for key, study in studies.items():
        summary = out[key] = _write_tuned(study.search, study.finish())
        print(f"tune {key}: {summary['trials']}, {summary['epochs_trained']} epochs; best val_acc "
              f"{summary['best_val_acc']} with lr {summary['optimizer']['lr']:.4g}, "
              f"weight_decay {summary['optimizer']['weight_decay']:.4g}", flush=True)
    return out


def _run_studies(studies: dict[str, Study], cfg: ExecutorConfig, gpu: bool) -> None:
    """Keep every slot of the executor busy with trials, taken from the studies in turn, until every
    budget is filled. A failed trial is recorded as failed (and the stage fails after the others end). Each
    finished trial's line starts with the stage's progress: trials done of those to run, time elapsed and
    an estimate of the time left, from the train stage's cost model (a trial pruned after k of its n epochs
    cost k/n of its run; the trials to come are counted whole, so the estimate errs long)."""
    prepared, specs, failed = PREPARED.resolve(), {}, []
    costs = {key: cell_cost(study.search.cell) for key, study in studies.items()}  # of one whole trial
    expected = {key: study.left() for key, study in studies.items()}
    progress = Progress([costs[key] for key, n in expected.items() for _ in range(n)], unit="trials")
    with running(cfg, gpu=gpu) as executor:
        print(f"tune: trials on {executor.where}", flush=True)
        try:
            open_studies = list(studies.values())
            while True:
                while open_studies and executor.pending() < executor.slots:
                    study = open_studies.pop(0)
                    spec = study.ask(prepared)
                    if spec is not None:
                        key = study.search.key
                        if expected[key]:
                            expected[key] -= 1
                        else:  # one more than counted at the start: a dead coordinator's trial queued again
                            progress.add(costs[key])
                        specs[(key, spec.number)] = spec
                        executor.submit((key, spec.number), run_trial, spec)
                        open_studies.append(study)
                if not executor.pending():
                    break
                done = executor.next_done()
                spec = specs.pop(done.key)
                whole, epochs = costs[done.key[0]], done.result["epochs"] if done.ok else 0
                where = progress.finished(whole * epochs / spec.search.cell.train.epochs, whole)
                studies[done.key[0]].tell(spec, done.result if done.ok else None, where)
                if not done.ok:
                    failed.append(f"{done.key[0]} trial {done.key[1]}: {done.error}")
        except BaseException:
            executor.close()
            for spec in specs.values():  # stay RUNNING in the study: the next run fails and requeues them
                studies[spec.search.key].log.end_trial(spec.mlflow_run_id, "killed", {})
            raise
    if failed:
        raise CifarbenchError(f"{len(failed)} tuning trial(s) failed; rerun to resume the studies:\n" + "\n".join(failed))


def _write_tuned(search: Search, summary: dict) -> dict:
    cell = search.cell
    write_json_atomic(tuned_path(cell.preset, cell.arch, cell.ablation if search.own else None), summary)
    return summary
