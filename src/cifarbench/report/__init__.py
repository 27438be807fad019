"""The comparison report: the pipeline's current MLflow runs -> pandas -> reports/ (Markdown, one
self-contained HTML file, figures, metrics.json). The runs are read by cifarbench.tracking.read
(load_runs, load_histories, load_tuning, re-exported here; load_confusions).

    tables.py    the numbers: leaderboard, per-class accuracy and confusions, paired deltas with 95% intervals,
                 effects, Pareto front
    stats.py     paired t per comparison, Holm and Benjamini-Hochberg, DerSimonian-Laird random effects
    figures.py   matplotlib figures
    sections.py  the report's sections, in reading order
    render.py    Markdown and HTML (tables sortable by a click on a header)
    build.py     the `report` stage and `cifarbench report`
"""

from cifarbench.tracking.read import load_histories, load_runs, load_tuning


__all__ = ["load_histories", "load_runs", "load_tuning"]
