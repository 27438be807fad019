"""DVC stage `prepare`: extract the archive safely and write the seeded train/val/test splits."""

import sys

from cifarbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "--step", "prepare", *sys.argv[1:]]))
