"""DVC stage `train`: every cell of the preset's matrix that is not already finished under its current key,
its runs fanned out over the executor (params.yaml `executor:`); see cifarbench.commands.train and
cifarbench.pipeline."""

import sys

from cifarbench.commands.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
