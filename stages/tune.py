"""DVC stage `tune@<arch>`: Optuna tunes one architecture's learning rate and weight decay on the
validation split and writes runs/<preset>/tuned/<arch>.json, which that architecture's train cells read.

Runs in a fork of the warm worker (cifarbench.worker) so the study does not pay torch's and mlflow's
imports again; CIFARBENCH_WORKER=0 runs it in this process.
"""

import sys

from cifarbench.worker import run

if __name__ == "__main__":
    sys.exit(run("cifarbench.tuning:tune_main", sys.argv[1:]))
