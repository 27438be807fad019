"""DVC stage `download`: fetch the archive named by params.yaml `data.url` and verify `data.md5`."""

import sys

from cifarbench.commands.data import download_main

if __name__ == "__main__":
    sys.exit(download_main(sys.argv[1:]))
