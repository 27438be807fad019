"""A tuning process for the kill and parallel-worker tests: `python tuning_child.py PARAMS.json ARCH WORKERS`,
run in the folder holding data/prepared."""

import json
import sys

from cifarbench.tuning import tune_stage

if __name__ == "__main__":
    tree = json.loads(open(sys.argv[1]).read())
    tune_stage(tree, sys.argv[2], workers=int(sys.argv[3]))
