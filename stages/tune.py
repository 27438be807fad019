"""DVC stage `tune`: Optuna tunes every architecture's learning rate and weight decay (and those of each
cell of a `tune: own` ablation, no_bn) on the validation split, all studies' trials fanned out over the
executor; writes runs/<preset>/tuned/<arch>.json and runs/<preset>/tuned/<arch>/<ablation>.json."""

import sys

from cifarbench.tuning import tune_main

if __name__ == "__main__":
    sys.exit(tune_main(sys.argv[1:]))
