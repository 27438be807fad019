"""DVC stage `download`: fetch the archive named by params.yaml `data.url` and verify `data.md5`."""

import sys

from cifarbench.cli import main

if __name__ == "__main__":
    sys.exit(main(["data", "--step", "download", *sys.argv[1:]]))
