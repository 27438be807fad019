"""The tune stage: every architecture's study at once, all studies' trials fanned out over the executor
(`cifarbench tune`, which `stages/tune.py` runs); writes runs/<preset>/tuned/<arch>.json."""

from __future__ import annotations

from cifarbench.config import TrackingConfig, parse_section
from cifarbench.data.commands import PREPARED
from cifarbench.errors import CifarbenchError
from cifarbench.execute import ExecutorConfig, running
from cifarbench.io import write_json_atomic
from cifarbench.pipeline import checked_cells, tuned_path
from cifarbench.plan import load_plan
from cifarbench.tracking import Tracker
from cifarbench.tuning.config import TuneConfig
from cifarbench.tuning.search import Search, make_search
from cifarbench.tuning.storage import shown, storage_url
from cifarbench.tuning.study import Study, summarize
from cifarbench.tuning.trial import quiet, run_trial


def tune_stage(tree: dict, executor: ExecutorConfig, archs: list[str] | None = None) -> dict[str, dict]:
    """Tune the lr and weight decay of every architecture (or `archs`), all studies' trials fanned out
    over the executor; writes each tuned file and returns their contents by architecture."""
    quiet()
    plan = load_plan(tree)
    checked_cells(plan)  # bad params fail here, before any training
    cfg = parse_section(TuneConfig, tree.get("tune"), "tune")
    url = storage_url(cfg)
    searches = [make_search(plan, cfg, arch, url) for arch in (archs or plan.architectures)]
    out = {}
    for search in [s for s in searches if s.trials == 0]:
        out[search.cell.arch] = _write_tuned(search, summarize(None, search, shown(url)))
        print(f"tune {search.cell.arch}: preset {plan.preset} does not tune; the recipe's lr and weight decay stand")
    searches = [s for s in searches if s.trials > 0]
    if not searches:
        return out
    tracker = Tracker.open(parse_section(TrackingConfig, tree.get("tracking"), "tracking"))
    studies = {s.cell.arch: Study(s, cfg, url, tracker) for s in searches}
    print(f"tune ({plan.preset}): {len(studies)} studies in {shown(url)}, "
          f"{', '.join(f'{a} {s.trials} x {s.cell.train.epochs} ep' for a, s in ((s.cell.arch, s) for s in searches))}",
          flush=True)
    _run_studies(studies, executor, gpu=any(s.cell.train.device != "cpu" for s in searches))
    for arch, study in studies.items():
        summary = out[arch] = _write_tuned(study.search, study.finish())
        print(f"tune {arch}: {summary['trials']}, {summary['epochs_trained']} epochs; best val_acc "
              f"{summary['best_val_acc']} with lr {summary['optimizer']['lr']:.4g}, "
              f"weight_decay {summary['optimizer']['weight_decay']:.4g}", flush=True)
    return out


def _run_studies(studies: dict[str, Study], cfg: ExecutorConfig, gpu: bool) -> None:
    """Keep every slot of the executor busy with trials, taken from the studies in turn, until every
    budget is filled. A failed trial is recorded as failed (and the stage fails after the others end)."""
    prepared, specs, failed = PREPARED.resolve(), {}, []
    with running(cfg, gpu=gpu) as executor:
        print(f"tune: trials on {executor.where}", flush=True)
        try:
            open_studies = list(studies.values())
            while True:
                while open_studies and executor.pending() < executor.slots:
                    study = open_studies.pop(0)
                    spec = study.ask(prepared)
                    if spec is not None:
                        specs[(study.search.cell.arch, spec.number)] = spec
                        executor.submit((study.search.cell.arch, spec.number), run_trial, spec)
                        open_studies.append(study)
                if not executor.pending():
                    break
                done = executor.next_done()
                spec = specs.pop(done.key)
                studies[done.key[0]].tell(spec, done.result if done.ok else None)
                if not done.ok:
                    failed.append(f"{done.key[0]} trial {done.key[1]}: {done.error}")
        except BaseException:
            executor.close()
            for spec in specs.values():  # stay RUNNING in the study: the next run fails and requeues them
                studies[spec.search.cell.arch].log.end_trial(spec.mlflow_run_id, "killed", {})
            raise
    if failed:
        raise CifarbenchError(f"{len(failed)} tuning trial(s) failed; rerun to resume the studies:\n" + "\n".join(failed))


def _write_tuned(search: Search, summary: dict) -> dict:
    write_json_atomic(tuned_path(search.cell.preset, search.cell.arch), summary)
    return summary


# `cifarbench tune` (cifarbench.cli), which `stages/tune.py` runs
def configure(parser) -> None:
    parser.add_argument("--arch", action="append", help="tune only this architecture (repeatable; default: all)")


def run(args) -> None:
    from cifarbench.config import load_params

    tree = load_params()
    tune_stage(tree, parse_section(ExecutorConfig, tree.get("executor"), "executor"), args.arch)
