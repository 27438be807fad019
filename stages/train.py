"""DVC stage `train@<arch>-<ablation>`: train, validate and test one cell of the benchmark (all its seeds).

Runs in a fork of the warm worker (cifarbench.worker) so the cell does not pay torch's and mlflow's
imports again; CIFARBENCH_WORKER=0 runs it in this process.
"""

import sys

from cifarbench.worker import run

if __name__ == "__main__":
    sys.exit(run("cifarbench.pipeline:train_main", sys.argv[1:]))
