"""DVC stage `tune`: Optuna tunes every architecture's learning rate and weight decay (and those of each
cell of a `tune: own` ablation, no_bn) on the validation split, all studies' trials fanned out over the
executor; writes runs/<preset>/tuned/<arch>.json and runs/<preset>/tuned/<arch>/<ablation>.json."""

import sys

from cifarbench.commands.tune import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
