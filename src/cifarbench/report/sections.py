"""The report's sections, in reading order: each turns the gathered runs into a heading, a one-line
reading guide and its tables and figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cifarbench.plan import BASELINE, PlanConfig
from cifarbench.report import figures, tables
from cifarbench.report.disclosure import disclosure_section
from cifarbench.report.figures import png_bytes
from cifarbench.report.literature import PUBLISHED
from cifarbench.report.render import Bullets, Document, Image, Section, Table, formatted
from cifarbench.tracking.read import column
from cifarbench.tracking.tags import (
    DATA_MD5, FAST, GIT_COMMIT, GIT_DIRTY, HOST_CPU, MLFLOW_VERSION, PYTHON_VERSION, TORCH_VERSION,
)


@dataclass(frozen=True)
class Inputs:
    """Everything a report is built from."""

    preset: str
    archs: list[str]
    ablations: list[str]
    expected: pd.DataFrame   # tables.expected_cells
    runs: pd.DataFrame       # current runs of this plan (tables.select_current)
    left_out: pd.DataFrame   # current runs of the preset that are not this plan's (other params, dropped cells)
    histories: pd.DataFrame  # tracking.read.load_histories of `runs`
    studies: pd.DataFrame    # tracking.read.load_tuning
    tuned: dict              # plan.read_tuned_values: study key (arch, arch/ablation) -> {lr, weight_decay} or None
    provenance: dict[str, str]  # what the runs' tags do not say: this report's commit, dvc.lock digest, store
    plan: PlanConfig | None = None  # what was trained (the disclosure section); None: that section says so
    confusions: dict[str, pd.DataFrame] = field(default_factory=dict)  # run id -> test confusion counts (read.load_confusions)


def pct(x) -> str:
    return f"{100 * x:.2f}"


def points(x) -> str:
    return f"{100 * x:+.2f}"


def document(inp: Inputs) -> tuple[Document, dict]:
    """The report and its headline numbers (for reports/metrics.json)."""
    board = tables.leaderboard(inp.runs, inp.expected)
    deltas = tables.paired_deltas(inp.runs, inp.expected)
    buys = tables.paired_deltas(inp.runs, inp.expected, buys=True)
    effect = tables.effects(buys, inp.expected[inp.expected["ablation"].isin(inp.ablations)])
    missing = tables.missing_runs(inp.runs, inp.expected)
    planned = sum(len(e.seeds) for e in inp.expected.itertuples() if e.applies)
    n_na = int((~inp.expected["applies"] & inp.expected["ablation"].isin(inp.ablations)).sum())
    unrun = [b for b in inp.expected["ablation"].drop_duplicates() if b not in inp.ablations]
    intro = [
        f"Preset {inp.preset}: {len(inp.runs)} of {planned} planned runs found "
        f"({len(inp.archs)} architectures x {len(inp.ablations)} ablations, {n_na} cells not applicable); "
        f"{len(missing)} missing; {len(tables.untrained_runs(inp.runs))} did not train (named in section 2); "
        f"{len(inp.left_out)} current runs of this preset left out because they were made "
        "under other params or code than the plan gives now (dvc repro reruns those cells).",
        *([f"Not run by any architecture in this preset, so left out of every table: "
           f"{', '.join(unrun)} (the nightly and full presets run them)."] if unrun else []),
        "Accuracies are test-set percentages. What a technique buys is the test accuracy with it minus without it "
        "(each ablation names the pair of cells, e.g. rotation = rotate - aug_none), in percentage points, "
        "paired by seed: positive = it helps. Source: the current MLflow runs of this preset (see Provenance).",
        _method(buys),
    ]
    sections = [
        disclosure_section(inp.plan, inp.tuned),
        leaderboard_section(board, inp),
        per_class_section(inp),
        matrix_section(buys, deltas, board, missing, inp),
        effects_section(effect, buys, inp.archs),
        curves_section(inp, tables.early_stopping(inp.runs, inp.expected, buys)),
        pareto_section(board),
        tuning_section(inp),
        provenance_section(inp),
    ]
    metrics = {
        "preset": inp.preset,
        "runs": {"planned": planned, "found": len(inp.runs), "missing": len(missing), "left_out": len(inp.left_out)},
        "baseline_test_acc": _json(board["test_acc_mean"]),
        "baseline_test_acc_std": _json(board["test_acc_std"]),
        "mean_gain": _json(effect["mean_delta"]) if len(effect) else {},  # by technique: with minus without
        "random_effects": _random_effects_json(effect),  # by technique: DerSimonian-Laird estimate, 95%, tau2, I2
        "comparisons": {"tested": _family(buys), "bh": int(buys["bh"].sum()), "holm": int(buys["holm"].sum()),
                        "did_not_train": int(buys["state"].eq("did not train").sum())},
        "runs_did_not_train": len(tables.untrained_runs(inp.runs)),
    }
    return Document(f"CIFAR-10 benchmark: preset {inp.preset}", intro, sections), metrics


def _json(series: pd.Series) -> dict:
    return {str(k): (None if pd.isna(v) else float(v)) for k, v in series.items()}


def _random_effects_json(effect: pd.DataFrame) -> dict:
    if effect.empty:
        return {}
    keys = {"estimate": "re_delta", "lo": "re_lo", "hi": "re_hi", "tau2": "tau2", "i2": "i2"}
    return {str(t): {**{k: None if pd.isna(r[c]) else float(r[c]) for k, c in keys.items()},
                     "archs": int(r["re_archs"]), "verdict": r["verdict"]} for t, r in effect.iterrows()}


def _family(buys: pd.DataFrame) -> int:
    """How many comparisons Holm and Benjamini-Hochberg correct over."""
    return int(buys["p_holm"].notna().sum())


def _method(buys: pd.DataFrame) -> str:
    return (f"Method: each comparison's 95% interval is a paired t interval from its own seeds' differences "
            f"(df = n - 1; none with fewer than 2 seeds), with its two-sided paired t test p-value; the Benjamini-Hochberg "
            f"correction over all {_family(buys)} tested comparisons of the table (every architecture) decides the "
            f"headline (* = survives at a false discovery rate of 5 %: of the starred comparisons, 5 % are expected to "
            f"be false; ° = only the uncorrected interval excludes 0); Holm-adjusted p-values (familywise error) are "
            f"shown beside it. The correction was chosen before the runs: a table of this many comparisons, many of "
            f"them expected to be real effects, is a screen for discoveries. Over architectures, a random-effects "
            f"estimate (DerSimonian-Laird between-architecture variance) from each architecture's mean difference and "
            f"its squared standard error (sd² / n), with a Hartung-Knapp interval (t, k - 1 df), its p-value "
            f"Benjamini-Hochberg-corrected over the techniques for the verdict. Every interval is conditional "
            f"on the fixed test images: it holds seed-to-seed noise, not test-set sampling noise. A run that did not "
            f"train (loss not finite, training and validation accuracy within 3 sd of chance, one class predicted "
            f"for 90 % of the test images) is named and left out of every "
            f"mean, difference and summary.")


def leaderboard_section(board: pd.DataFrame, inp: Inputs) -> Section:
    untrained = board["untrained"] if "untrained" in board else pd.Series(0, index=board.index)
    show = board.assign(
        test_acc=[_mean_std(m, s, u) for m, s, u in zip(board["test_acc_mean"], board["test_acc_std"], untrained)],
        source=["tuned" if inp.tuned.get(a) else "recipe" for a in board.index],
    ).sort_values("test_acc_mean", ascending=False, na_position="last")
    show = show[["test_acc", "n", "params", "flops_per_image", "train_seconds", "images_per_s", "optimizer", "lr",
                 "weight_decay", "source"]]
    show = formatted(show, {"params": lambda v: f"{v:,.0f}", "flops_per_image": lambda v: f"{v / 1e6:,.2f}",
                            "train_seconds": lambda v: f"{v:,.1f}", "images_per_s": lambda v: f"{v:,.0f}",
                            "lr": lambda v: f"{v:.3g}", "weight_decay": lambda v: f"{v:.3g}"})
    show.columns = ["test acc % (mean ± sd)", "seeds", "params", "MFLOPs/image", "train s/seed", "train img/s",
                    "optimizer", "lr", "weight decay", "lr/wd from"]
    blocks = [Table(show)]
    if untrained.any():
        blocks += ["Baseline runs that did not train, left out of the accuracy above (named in section 2):",
                   Bullets([f"{a}: {u} of {u + board.loc[a, 'n']} seeds" for a, u in untrained.items() if u])]
    if inp.preset == "full":  # the literature recipe: its numbers are comparable with the published ones
        published = pd.DataFrame({
            "measured % (mean ± sd)": [_mean_std(board.loc[a, "test_acc_mean"], board.loc[a, "test_acc_std"])
                                       for a in board.index],
            "published %": [f"{PUBLISHED[a][0]:.2f}" if a in PUBLISHED else "no published number" for a in board.index],
            "source": [PUBLISHED[a][1] if a in PUBLISHED else "" for a in board.index],
        }, index=board.index)
        blocks += ["Beside a published number for the same architecture and depth only (none rather than an unlike "
                   "one); each source says how it trained, which is not this preset's recipe:", Table(published)]
    return Section("leaderboard", "1. Leaderboard: baselines", "Each architecture's baseline cell as section 0 "
                   "describes it: the reference its techniques are measured against in section 2, not a ranking of "
                   "the papers' architectures. Sorted by test accuracy; n is the number of seeds behind the mean (runs that did not train left out).",
                   blocks)


def per_class_section(inp: Inputs) -> Section:
    accuracy = tables.per_class_accuracy(inp.runs, inp.archs)
    classes = [c for c in accuracy.columns if c != "seeds"]
    confusions = tables.baseline_confusions(inp.runs, inp.confusions, inp.archs)
    blocks = []
    if classes:
        show = formatted(accuracy, {**{c: pct for c in classes}, "seeds": lambda v: f"{v:.0f}"})
        blocks += ["Test accuracy % on each class's images, mean over the baseline's seeds that trained:", Table(show)]
    else:
        blocks.append("No run logged per-class test accuracies (metrics test_acc_<class>).")
    if confusions:
        blocks += [Image("confusion.png", png_bytes(figures.confusion_matrices(confusions)),
                         "confusion matrices of the baselines"),
                   "The confusion matrices above (confusion.png), one per architecture, summed over the baseline's "
                   "seeds and row-normalized: row = true class, column = the class predicted, the diagonal = the "
                   "accuracy per class. Each baseline's most frequent mistake:",
                   Bullets([_most_confused(arch, c) for arch, c in confusions.items()])]
    else:
        blocks.append("No baseline run logged a confusion matrix (artifact seed<k>-confusion.json).")
    return Section("per-class", "1b. Per class: baselines", "Where each baseline's errors fall: its accuracy on each "
                   "class, and which classes it mistakes for which.", blocks)


def _most_confused(arch: str, c: tables.Confusion) -> str:
    true, predicted, rate = c.most_confused()
    seeds = f"{c.seeds} seed{'s' * (c.seeds != 1)}"
    if c.seeds < c.trained:
        seeds = f"{c.seeds} of {c.trained} seeds; the others logged no matrix"
    return f"{arch}: {pct(rate)} % of the {true} images predicted {predicted} ({seeds})"


def _mean_std(mean: float, std: float, untrained: int = 0) -> str:
    if pd.isna(mean):
        return "did not train" if untrained else "missing"
    return pct(mean) + ("" if pd.isna(std) else f" ± {pct(std)}")


def matrix_section(buys: pd.DataFrame, deltas: pd.DataFrame, board: pd.DataFrame, missing: pd.DataFrame,
                   inp: Inputs) -> Section:
    questions = [b for b in inp.ablations if b != BASELINE]
    labels = _technique_labels(inp.expected, questions)
    figure = figures.delta_heatmap(buys, inp.archs, questions, labels)
    blocks = [Image("ablation_matrix.png", png_bytes(figure), "what each technique buys"),
              Table(_matrix(buys, board, inp.archs, questions, [labels[q] for q in questions]))]
    if len(missing):
        blocks += ["Missing runs (not finished, or made under other params):",
                   Bullets([f"{r.arch}/{r.ablation}/seed{r.seed}" for r in missing.itertuples()])]
    about = inp.expected[inp.expected["ablation"].isin(inp.ablations)].drop_duplicates("ablation")
    blocks += ["How each technique is measured (the with cell − the without cell) and what each ablation changes:",
               Bullets([f"{labels.get(r.ablation, 'the reference')} = {r.with_} − {r.without}: {r.ablation}, {r.about}"
                        if r.ablation != BASELINE else f"{r.ablation}: {r.about}" for r in about.itertuples()]),
               "Each ablation minus the baseline (the raw comparison; the augmentation columns here compare "
               "\"X only\" with the baseline's own augmentation, which is why they read negative; * and ° over this "
               "table's own comparisons):",
               Table(_matrix(deltas, board, inp.archs, inp.ablations, inp.ablations))]
    tested = buys[buys["p_holm"].notna()]
    if len(tested):
        blocks += [f"Every tested comparison of the first table: paired t test p-value, Benjamini-Hochberg-adjusted "
                   f"over the {len(tested)} (* below 0.05: the headline, false discovery rate 5 %) and Holm-adjusted "
                   f"(familywise error; * below 0.05):",
                   Table(_tests(tested, labels))]
    untrained = tables.untrained_runs(inp.runs)
    if len(untrained):
        blocks += ["Runs that did not train, left out of every difference, mean and summary (a cell with fewer "
                   "than 2 that trained reads \"did not train\"):", Table(_untrained(untrained))]
    fit = tables.fit_regime(inp.runs, inp.archs)
    if len(fit.columns):
        blocks += ["How far each network fits its training images, read from training and validation images only: "
                   "the last epoch's training accuracy (on that epoch's augmented batches, dropout on) and the best "
                   "validation accuracy, %, mean over the runs that trained. Near 100 % training accuracy without "
                   "augmentation (aug_none) or any regularization (no_reg), a network has memorized its training "
                   "images: the regime where regularization has something to correct. Far below it, the network "
                   "under-fits at its budget, and regularization has little to correct. – : no run of that cell trained "
                   "(or it is not planned for that architecture).",
                   Table(formatted(fit, {c: pct for c in fit.columns}, empty="–"))]
    return Section("ablations", "2. What each technique buys", "Blue helps, red hurts: each cell is the test accuracy "
                   "with the technique minus without it, paired by seed, [95% paired t interval from this "
                   "comparison's own seeds, df n - 1] when ≥ 2 seeds; * = survives the Benjamini-Hochberg correction over "
                   "all the table's comparisons (false discovery rate 5 %), ° = only the uncorrected interval excludes 0.",
                   blocks)


def _tests(tested: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    p = lambda v: f"{v:.2g}" if v >= 0.001 else "< 0.001"  # noqa: E731
    show = pd.DataFrame({
        "technique": [labels.get(a, a) for a in tested["ablation"]], "n": tested["n"],
        "Δ points": [points(v) for v in tested["delta"]],
        "95% interval": [f"[{points(lo)}, {points(hi)}]" if np.isfinite(lo) else "– (sd 0)"
                         for lo, hi in zip(tested["lo"], tested["hi"])],
        "p": [p(v) for v in tested["p"]], "p Holm": [p(v) for v in tested["p_holm"]],
        "p BH": [p(v) for v in tested["p_bh"]], "BH 0.05": tested["bh"].map({True: "*", False: ""}),
        "Holm 0.05": tested["holm"].map({True: "*", False: ""}),
    })  # fmt: skip
    return show.set_index(pd.Index(tested["arch"], name="arch"))


def _untrained(untrained: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"ablation": untrained["ablation"].to_numpy(), "seed": untrained["seed"].to_numpy(),
                         "run": untrained["run_name"].to_numpy(), "why": untrained["reason"].to_numpy()},
                        index=pd.Index(untrained["arch"], name="arch"))


def _technique_labels(expected: pd.DataFrame, ablations: list[str]) -> dict[str, str]:
    names = expected.drop_duplicates("ablation").set_index("ablation")["technique"]
    return {b: names.get(b) or b for b in ablations}


def _matrix(cells: pd.DataFrame, board: pd.DataFrame, archs: list[str], columns: list[str],
            labels: list[str]) -> pd.DataFrame:
    indexed = cells.set_index(["arch", "ablation"])
    return pd.DataFrame([[_matrix_cell(indexed.loc[(a, b)], board.loc[a]) for b in columns] for a in archs],
                        index=pd.Index(archs, name="arch"), columns=labels)


def _matrix_cell(c: pd.Series, base: pd.Series) -> str:
    if c.name[1] == BASELINE and c["state"] != "n/a":
        return f"{_mean_std(base['test_acc_mean'], base['test_acc_std'], base.get('untrained', 0))} (n={base['n']})"
    if c["state"] != "ok":
        return c["state"]
    text = points(c["delta"])
    if np.isfinite(c["lo"]):
        text += f" [{points(c['lo'])}, {points(c['hi'])}]"
    return text + figures.significance_mark(c) + f" (n={c['n']})"


def effects_section(effect: pd.DataFrame, buys: pd.DataFrame, archs: list[str]) -> Section:
    title = "3. What each technique buys, over architectures"
    if effect.empty:
        return Section("effects", title, "No ablations ran.", [])
    show = effect.assign(
        summary=[_summary(r) for r in effect.itertuples()],
        holm=[f"{r.helped} / {r.hurt} of {r.archs} (Holm {r.holm_helped} / {r.holm_hurt})" for r in effect.itertuples()],
        spread=[f"{points(lo)} to {points(hi)}" if np.isfinite(lo) else "–"
                for lo, hi in zip(effect["min_delta"], effect["max_delta"])],
        tau=[f"{100 * np.sqrt(t):.2f}" if np.isfinite(t) else "–" for t in effect["tau2"]],
        i2=[f"{100 * v:.0f}%" if np.isfinite(v) else "–" for v in effect["i2"]],
    )[["group", "summary", "re_archs", "tau", "i2", "holm", "spread", "verdict", "outside"]]
    show.columns = ["group", "random effects, points [95%]", "archs in it", "tau, points", "I²",
                    "archs above / below 0 (BH)", "range over archs", "verdict", "left out or floored"]
    blocks = [Table(show)]
    if ((effect["archs"] > 0) | (effect["did_not_train"] > 0)).any():
        blocks.insert(0, Image("forest.png", png_bytes(figures.forest(buys, effect, archs)), "forest plot per technique"))
    return Section("effects", title, "Per technique, a DerSimonian-Laird random-effects estimate over the "
                   "architectures (each enters with its mean paired difference and its squared standard error sd² / n; "
                   "tau = the spread of the true effect between architectures, I² = the share of the spread beyond seed "
                   "noise). Its 95% interval is Hartung-Knapp's (t with k - 1 df, the standard error from the spread of "
                   "the architectures), honest with few architectures and few seeds each; the verdict says helps only "
                   "where the estimate is above 0 with its p-value Benjamini-Hochberg-corrected over the techniques "
                   "below 0.05. An architecture with 1 seed is left out; one whose seeds all differ by exactly the same "
                   "amount (sd 0: noise below one test image) enters with the smallest standard error of another "
                   "architecture. The count column says on how many architectures the corrected comparison (BH; Holm "
                   "in brackets) lies above / below 0.",
                   blocks)


def _summary(r) -> str:
    if not np.isfinite(r.re_delta):
        return "–"
    return f"{points(r.re_delta)} [{points(r.re_lo)}, {points(r.re_hi)}]"


def curves_section(inp: Inputs, stopping: pd.DataFrame) -> Section:
    blocks = []
    for arch in inp.archs:
        if (inp.histories["arch"] == arch).any():
            fig = figures.learning_curves(inp.histories, inp.runs, arch, inp.ablations)
            blocks.append(Image(f"curves_{arch}.png", png_bytes(fig), f"learning curves of {arch}"))
    shown = inp.expected[inp.expected["ablation"].isin(inp.ablations)]
    ended = pd.DataFrame([[_ended(inp.runs, e) for e in shown[shown["arch"] == a].itertuples()]
                          for a in inp.archs], index=pd.Index(inp.archs, name="arch"), columns=inp.ablations)
    blocks += ["Epoch at which each seed ended (of the planned epochs; † early stop, ‡ diverged):", Table(ended)]
    if len(stopping):
        show = pd.DataFrame({
            "epochs run (mean) / planned": [f"{r.epochs_run:.1f} / {r.epochs}" if np.isfinite(r.epochs_run) else "missing"
                                            for r in stopping.itertuples()],
            "training saved": [f"{100 * v:.0f}%" if np.isfinite(v) else "–" for v in stopping["saved"]],
            "test acc gain, points [95%]": [_gain(r) for r in stopping.itertuples()],
        }, index=pd.Index(stopping["arch"], name="arch"))
        blocks += ["What early stopping buys (it may stop only after its start_fraction of the run, past the "
                   "learning-rate peak): epochs saved, and test accuracy against the same cell trained to the end:",
                   Table(show)]
    diverged = inp.runs[inp.runs["status"] == "diverged"]
    blocks.append(Bullets([f"{r} diverged" for r in diverged["run_name"]]) if len(diverged) else "No run diverged.")
    return Section("curves", "4. Learning curves", "Mean over seeds per epoch: solid = validation, dashed = training, "
                   "thick black = baseline; a gap that widens between them is overfitting.", blocks)


def _gain(r) -> str:
    if r.state != "ok":
        return r.state
    interval = f" [{points(r.lo)}, {points(r.hi)}]" if np.isfinite(r.lo) else ""
    return points(r.gain) + interval


def _ended(runs: pd.DataFrame, e) -> str:
    if not e.applies:
        return "n/a"
    r = runs[(runs["arch"] == e.arch) & (runs["ablation"] == e.ablation)].sort_values("seed")
    if r.empty:
        return "missing"
    marks = {"early_stopped": "†", "diverged": "‡"}
    return ", ".join(f"{s:.0f}{marks.get(st, '')}" for s, st in zip(r["metrics.stopped_epoch"], r["status"])) + f" / {e.epochs}"


def pareto_section(board: pd.DataFrame) -> Section:
    fronts = {c: tables.pareto_front(board[c], board["test_acc_mean"]) for c in ("flops_per_image", "params")}
    show = formatted(board[["test_acc_mean", "flops_per_image", "params"]].assign(
        front_flops=fronts["flops_per_image"].map({True: "yes", False: ""}),
        front_params=fronts["params"].map({True: "yes", False: ""})),
        {"test_acc_mean": pct, "flops_per_image": lambda v: f"{v / 1e6:,.2f}", "params": lambda v: f"{v:,.0f}"})
    show.columns = ["test acc %", "MFLOPs/image", "params", "on FLOPs front", "on params front"]
    blocks = [Table(show)]
    if board["test_acc_mean"].notna().any():
        blocks.insert(0, Image("pareto.png", png_bytes(figures.pareto(board, fronts)), "accuracy vs cost"))
    return Section("pareto", "5. Accuracy vs cost", "Up and left is better; the red line joins architectures no "
                   "other beats on both accuracy and cost (baselines, log-scale cost).", blocks)


def tuning_section(inp: Inputs) -> Section:
    t = tables.tuning(inp.studies, inp.tuned, inp.archs)
    spread = [f"{pct(lo)}–{pct(hi)}" if np.isfinite(lo) else "–" for lo, hi in zip(t["val_acc_min"], t["val_acc_max"])]
    show = formatted(t.assign(tuned=t["tuned"].map({True: "yes", False: "no (recipe)"}), spread=spread), {
        "best_lr": lambda v: f"{v:.3g}", "best_weight_decay": lambda v: f"{v:.3g}", "best_val_acc": pct,
        "recipe_val_acc": pct, "gain_over_recipe": points,
        **{c: lambda v: f"{v:.0f}" for c in ("trials_complete", "trials_pruned", "trials_failed")},
        "pruned_share": lambda v: f"{100 * v:.0f}%", "importance_lr": lambda v: f"{v:.2f}",
        "importance_weight_decay": lambda v: f"{v:.2f}"}, empty="–")
    show = show[["tuned", "study", "best_lr", "best_weight_decay", "best_val_acc", "recipe_val_acc", "gain_over_recipe",
                 "spread", "trials_complete", "trials_pruned", "trials_failed", "pruned_share", "importance_lr",
                 "importance_weight_decay"]]
    show.columns = ["tuned", "study", "best lr", "best wd", "best val acc %", "recipe val acc %", "gain, points",
                    "val acc % over complete trials", "complete", "pruned", "failed", "pruned share",
                    "importance lr", "importance wd"]
    return Section("tuning", "6. Tuning", "Optuna's best learning rate and weight decay per architecture (validation "
                   "split only), and per ablation tuned on its own cell (`tune: own`, rows `<arch>/<ablation>`). "
                   "Trial 0 of every study is the cell's recipe lr/wd, pruned like any other trial: 'gain' is the "
                   "best trial's validation accuracy minus the recipe's where the recipe's trial completed (same seed "
                   "and epochs; – where it was pruned); the spread shows how much the "
                   "search space matters; importance says which of the two mattered more.", [Table(show)])


def provenance_section(inp: Inputs) -> Section:
    r = inp.runs
    fast = sorted(c for c in r.columns if c.startswith(column(FAST)))
    rows = {
        "preset": inp.preset,
        **inp.provenance,
        "git commit of the runs": tables.distinct(r, column(GIT_COMMIT)),
        "runs from a dirty work tree": tables.distinct(r, column(GIT_DIRTY)),
        "data archive md5": tables.distinct(r, column(DATA_MD5)),
        "torch": tables.distinct(r, column(TORCH_VERSION)),
        "mlflow": tables.distinct(r, column(MLFLOW_VERSION)),
        "python": tables.distinct(r, column(PYTHON_VERSION)),
        "host CPU": tables.distinct(r, column(HOST_CPU)),
        **{f"fast path: {c.removeprefix(column(FAST))}": tables.distinct(r, c) for c in fast},
    }
    table = pd.DataFrame({"value": rows}).rename_axis("item")
    blocks = [Table(table)]
    if len(inp.left_out):
        names = sorted(inp.left_out["run_name"].astype(str))
        blocks += [f"Current runs of preset {inp.preset} left out (cell or seed not in the plan, or made under other "
                   f"params): {len(names)}", Bullets(names[:30] + (["…"] if len(names) > 30 else []))]
    return Section("provenance", "7. Provenance", "Where these numbers came from; several values in one row mean "
                   "the runs were made under different code, data or libraries.", blocks)
