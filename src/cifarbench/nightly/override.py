"""Run the pipeline under another preset and leave params.yaml and dvc.lock as they were (why this and not
`dvc exp run -S`: see the package docstring)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from cifarbench.errors import ConfigError

PRESET_LINE = re.compile(r"^preset:[ \t]*([^\s#]+)", re.MULTILINE)  # the top-level key; its comment is kept
TARGETS = ("train",)  # the train matrix and its upstream stages (data, tune); not the report stage
TERMINATE = (signal.SIGTERM, signal.SIGHUP)  # how CI and a closed terminal stop a job


def with_preset(text: str, preset: str) -> str:
    """params.yaml text with the top-level `preset:` value replaced; nothing else changes."""
    if not PRESET_LINE.search(text):
        raise ConfigError("params.yaml: no top-level `preset:` line to override")
    return PRESET_LINE.sub(lambda m: m.group(0).replace(m.group(1), preset, 1), text, count=1)


@contextlib.contextmanager
def preset_override(preset: str, params: Path = Path("params.yaml"), lock: Path = Path("dvc.lock")) -> Iterator[None]:
    """params.yaml says `preset: <preset>` inside the block; afterwards params.yaml and dvc.lock hold their
    old bytes again (dvc.lock removed if there was none). A params.yaml edited meanwhile is left alone."""
    original = params.read_bytes()
    old_lock = lock.read_bytes() if lock.is_file() else None
    changed = with_preset(original.decode(), preset).encode()
    previous = {sig: signal.signal(sig, _raise_exit) for sig in TERMINATE}
    try:
        params.write_bytes(changed)
        yield
    finally:
        if params.read_bytes() == changed:
            params.write_bytes(original)
        else:
            print(f"cifarbench nightly: {params} was edited during the run; left as it is now", file=sys.stderr)
        if old_lock is None:
            lock.unlink(missing_ok=True)
        else:
            lock.write_bytes(old_lock)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `finally` above


def reproduce(preset: str, params: Path = Path("params.yaml")) -> int:
    """`dvc repro --no-run-cache train` under `preset`; DVC's exit status. Stage commands find `python`
    and `dvc` of this environment first on PATH, as `make repro` arranges."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    with preset_override(preset, params, params.parent / "dvc.lock"):
        return subprocess.run([sys.executable, "-m", "dvc", "repro", "--no-run-cache", *TARGETS],
                              cwd=params.parent, env=env).returncode
