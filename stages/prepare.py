"""DVC stage `prepare`: extract the archive safely and write the seeded train/val/test splits."""

import sys

from cifarbench.commands.data import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main(sys.argv[1:]))
