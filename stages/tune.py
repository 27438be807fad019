"""DVC stage `tune`: Optuna tunes every architecture's learning rate and weight decay on the validation
split, all studies' trials fanned out over the executor; writes runs/<preset>/tuned/<arch>.json."""

import sys

from cifarbench.tuning import tune_main

if __name__ == "__main__":
    sys.exit(tune_main(sys.argv[1:]))
