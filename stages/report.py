"""DVC stage `report`: read the current pipeline's runs from MLflow and write the comparison report to
reports/ (comparison.md, comparison.html, figures/, metrics.json); see cifarbench.report.

Runs in a fork of the warm worker (cifarbench.worker); CIFARBENCH_WORKER=0 runs it in this process.
"""

import sys

from cifarbench.worker import run

if __name__ == "__main__":
    sys.exit(run("cifarbench.report:report_main", sys.argv[1:]))
