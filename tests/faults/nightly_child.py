"""`cifarbench nightly` that SIGKILLs itself at one point, for the fault probes: just before the rename that
would publish a file whose path contains argv[1] (the atomic writes of cifarbench.io all end in os.replace).

    python nightly_child.py <path part> [cifarbench nightly arguments]
"""

import os
import signal
import sys

from cifarbench.cli import main

target, *arguments = sys.argv[1:]
replace = os.replace


def replace_or_die(src, dst, *args, **kwargs):
    if target in str(dst):
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written, the rename never happens
    return replace(src, dst, *args, **kwargs)


os.replace = replace_or_die
sys.exit(main(["nightly", *arguments]))
