"""DVC stage `tune`: Optuna tunes every architecture's learning rate and weight decay on the validation
split, all studies' trials fanned out over the executor; writes runs/<preset>/tuned/<arch>.json."""

import sys

from cifarbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
