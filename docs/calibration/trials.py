"""How many Optuna trials a preset's studies need, on validation accuracy only.

For every study in an Optuna storage (a journal file or an RDB URL), the best validation accuracy among its
first k trials (a pruned trial counts with its best reported epoch) against the best of all of them, for
every k. A preset's `tune_trials` may drop to the smallest k that loses at most `--tolerance` points in every
study. Never reads a test file: the studies hold validation accuracies only.

    python docs/calibration/trials.py optuna/studies.journal --tolerance 1.0
"""

from __future__ import annotations

import argparse
import warnings

import optuna


def best_of(trials, k: int) -> float:
    values = [t.value if t.value is not None else max(t.intermediate_values.values(), default=0.0)
              for t in trials[:k] if t.state.is_finished()]
    return max(values, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("storage", help="an Optuna journal file or RDB URL")
    parser.add_argument("--tolerance", type=float, default=1.0, help="validation points a study may lose")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = (args.storage if "://" in args.storage else
               optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(args.storage)))
    studies = {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).trials
               for s in optuna.get_all_study_summaries(storage)}
    most = max(len(t) for t in studies.values())
    print(f"{'study':40s} " + " ".join(f"k={k:<5d}" for k in range(1, most + 1)) + "  (best val % of the first k)")
    enough = 1
    for name, trials in sorted(studies.items()):
        best = [100 * best_of(trials, k) for k in range(1, len(trials) + 1)]
        print(f"{name:40s} " + " ".join(f"{b:7.1f}" for b in best))
        enough = max(enough, next(k for k, b in enumerate(best, 1) if b >= best[-1] - args.tolerance))
    print(f"smallest k losing at most {args.tolerance} validation points in every study: {enough}")


if __name__ == "__main__":
    main()
