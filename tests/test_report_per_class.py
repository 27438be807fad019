"""Per-class accuracy and confusion matrices of each baseline: the table and figure from plain frames, the
section that names the figure and each baseline's most frequent mistake, and the confusion artifacts read
back from a real MLflow SQLite store."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cifarbench.report import figures, tables
from cifarbench.report.figures import png_bytes
from cifarbench.report.render import Bullets, Image, Table
from cifarbench.report.sections import Inputs, per_class_section

CLASSES = ["cat", "dog", "ship"]


def matrix(counts) -> pd.DataFrame:
    return pd.DataFrame(counts, index=pd.Index(CLASSES, name="true"), columns=pd.Index(CLASSES, name="predicted"))


def runs() -> pd.DataFrame:
    """vgg11: two baseline seeds that trained, one that did not, one ablation run; lenet5: one seed."""
    rows = [("r0", "vgg11", "baseline", 0, "true", [0.5, 0.7, 0.9]),
            ("r1", "vgg11", "baseline", 1, "true", [0.7, 0.5, 0.8]),
            ("r2", "vgg11", "baseline", 2, "false", [0.0, 1.0, 0.0]),
            ("r3", "vgg11", "dropout", 0, "true", [0.1, 0.1, 0.1]),
            ("r4", "lenet5", "baseline", 0, "true", [0.4, 0.4, 0.6])]
    return pd.DataFrame([{"run_id": i, "arch": a, "ablation": b, "seed": s, "tags.trained": t,
                          **{f"metrics.test_acc_{c}": v for c, v in zip(CLASSES, accs)}}
                         for i, a, b, s, t, accs in rows])


def test_per_class_accuracy_is_the_mean_over_the_baselines_trained_seeds():
    table = tables.per_class_accuracy(runs(), ["vgg11", "lenet5", "resnet18"])
    assert list(table.columns) == [*CLASSES, "seeds"]
    assert table.loc["vgg11", "cat"] == pytest.approx(0.6) and table.loc["vgg11", "ship"] == pytest.approx(0.85)
    assert table.loc["vgg11", "seeds"] == 2 and table.loc["lenet5", "seeds"] == 1  # r2 did not train, r3 ablation
    assert table.loc["resnet18"].drop("seeds").isna().all() and table.loc["resnet18", "seeds"] == 0


def test_confusions_are_summed_over_trained_baseline_seeds_and_row_normalized():
    logged = {"r0": matrix([[6, 4, 0], [2, 8, 0], [0, 0, 10]]), "r1": matrix([[4, 6, 0], [0, 10, 0], [0, 1, 9]]),
              "r2": matrix([[0, 10, 0]] * 3), "r3": matrix(np.eye(3) * 10)}  # r2 did not train, r3 an ablation
    found = tables.baseline_confusions(runs(), logged, ["vgg11", "lenet5"])
    assert list(found) == ["vgg11"]  # lenet5 logged no matrix
    vgg = found["vgg11"]
    assert vgg.counts.to_numpy().tolist() == [[10, 10, 0], [2, 18, 0], [0, 1, 19]]
    assert (vgg.seeds, vgg.trained) == (2, 2)
    assert vgg.rates().sum(axis=1).to_numpy() == pytest.approx([1, 1, 1])
    assert vgg.most_confused() == ("cat", "dog", pytest.approx(0.5))
    assert png_bytes(figures.confusion_matrices(found)).startswith(b"\x89PNG")


def test_the_section_shows_the_table_names_the_figure_and_each_most_frequent_mistake():
    logged = {"r0": matrix([[6, 4, 0], [2, 8, 0], [0, 0, 10]]), "r4": matrix([[9, 0, 1], [0, 7, 3], [0, 0, 10]])}
    empty = pd.DataFrame()
    inputs = Inputs("default", ["vgg11", "lenet5"], ["baseline"], empty, runs(), empty, empty, empty, {}, {},
                    confusions=logged)
    blocks = per_class_section(inputs).blocks
    table = next(b for b in blocks if isinstance(b, Table)).frame
    assert table.loc["vgg11", "cat"] == "60.00" and table.loc["lenet5", "seeds"] == "1"
    image = next(b for b in blocks if isinstance(b, Image))
    assert image.name == "confusion.png" and any(isinstance(b, str) and "confusion.png" in b for b in blocks)
    mistakes = next(b for b in blocks if isinstance(b, Bullets)).items
    assert mistakes == ["vgg11: 40.00 % of the cat images predicted dog (1 of 2 seeds; the others logged no matrix)",
                        "lenet5: 30.00 % of the dog images predicted ship (1 seed)"]


def test_without_per_class_metrics_or_matrices_the_section_says_so():
    empty = pd.DataFrame()
    plain = runs()[["run_id", "arch", "ablation", "seed", "tags.trained"]]
    blocks = per_class_section(Inputs("default", ["vgg11"], ["baseline"], empty, plain, empty, empty, empty, {},
                                      {})).blocks
    assert not any(isinstance(b, (Table, Image)) for b in blocks)
    assert any("test_acc_<class>" in b for b in blocks if isinstance(b, str))
    assert any("seed<k>-confusion.json" in b for b in blocks if isinstance(b, str))


def test_load_confusions_reads_each_runs_logged_matrix_back(tmp_path):
    from mlflow import MlflowClient

    from cifarbench.tracking.read import load_confusions

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("confusion", (tmp_path / "mlruns").as_uri())
    counts = [[5, 1, 0], [2, 4, 0], [0, 0, 6]]
    with_matrix, without = (client.create_run(experiment).info.run_id for _ in range(2))
    artifact = tmp_path / "seed3-confusion.json"
    artifact.write_text(json.dumps({"classes": CLASSES, "confusion": counts}))
    client.log_artifact(with_matrix, str(artifact))
    other = tmp_path / "seed3-notes.json"
    other.write_text("{}")
    client.log_artifact(without, str(other))
    found = load_confusions(uri, [with_matrix, without])
    assert list(found) == [with_matrix]
    assert found[with_matrix].to_numpy().tolist() == counts
    assert list(found[with_matrix].index) == list(found[with_matrix].columns) == CLASSES
