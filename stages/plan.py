"""DVC stage `plan`: validate every cell of the preset against params.yaml (bad params fail here, before any
training) and write each cell's slice of params.yaml to runs/<preset>/plan/<arch>/<ablation>.json, the file
its train stage depends on.

Runs in a fork of the warm worker (cifarbench.worker); CIFARBENCH_WORKER=0 runs it in this process.
"""

import sys

from cifarbench.worker import run

if __name__ == "__main__":
    sys.exit(run("cifarbench.pipeline:plan_main", sys.argv[1:]))
