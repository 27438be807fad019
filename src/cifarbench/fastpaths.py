"""CPU fast paths chosen by a short measurement on this machine, per model, cached and recorded.

Which of fp32, bf16 autocast and bf16 autocast + channels_last trains a model fastest depends on the CPU,
the model and the batch, not on CPU flags alone. Measured on an AVX512-BF16 Xeon at 1 thread: bf16 without
channels_last was 0.86x of fp32 for vgg11@0.125 and 0.99x for googlenet@0.0625, bf16 + channels_last
1.04x and 1.54x; on an AVX2-only EPYC emulated bf16 is ~2.5x slower and channels_last hung in oneDNN.

So before the train stage fans out, each architecture's baseline model is timed for a few training steps
under each candidate, in a subprocess with a time limit (a hang costs that candidate, nothing else), at the
thread count the runs use. A candidate is chosen only if it beats fp32 by MIN_GAIN (else exact fp32). The
choice is cached in `~/.cache/cifarbench/fast-paths.json` (XDG_CACHE_HOME) per (CPU model, torch version,
threads, model, batch), so a machine measures once and all its projects share the choice (merged into the
file under a lock; a file this version cannot read is measured again, with a warning), and each run
records it (tags `fast.autocast`, `fast.channels_last`, `fast.measured`). The choice is not part of a cell's
key: moving the repository to another machine does not retrain finished cells, and throughput is only ever
compared on the same CPU model (nightly). A run's choice is saved in its checkpoint: a resumed run keeps the
one it started with, whatever the cache says by then (engine.train.fit).

This module is the one place that decides bf16 on a CPU: `choose` by measurement; `unmeasured` for a run
nothing was measured for (a tuning trial, a run on a Ray node, a direct `fit`), from the CPU's bf16
instructions (`native_bf16`, also what `cifarbench models --bench --bf16 auto` asks).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cifarbench.io import DamagedFile, locked, read_checked_json, user_cache, write_json_atomic


def _cache() -> Path:
    """One file per machine (not per repository): every project and test on this machine trains with the
    same choice, so their numbers agree. Delete it to measure again."""
    return user_cache() / "fast-paths.json"


CANDIDATES = {"fp32": (None, False), "bf16": ("bfloat16", False), "bf16+channels_last": ("bfloat16", True)}
MIN_GAIN = 1.05  # below a 5% gain, exact fp32 is worth more than speed (and 5% is within run-to-run drift)
PROBE_TIMEOUT_S = 120  # one model, all candidates: ~5-30 s measured; past this a candidate hung
CACHE_FORMAT = 2  # {"format": 2, "entries": {key: entry}}; the bare {key: entry} before it is measured again
LOCK_TIMEOUT_S = 60.0  # a merge takes milliseconds; the lock is never held while measuring


def choose(models: dict[str, tuple[dict, int]], threads: int, *, parallel: int = 1, cache: Path | None = None) -> dict:
    """{name: {"choice": candidate, "measured": {candidate: images/s or None}}} for each
    name -> (model config as a dict, batch size); measured here once, then read from `cache`."""
    import torch

    cache = cache or _cache()
    machine = f"{cpu_model()}|torch {torch.__version__}|{threads} thread(s)"
    known = read_cache(cache)
    keys = {name: _key(machine, cfg, batch) for name, (cfg, batch) in models.items()}
    todo = {name: models[name] for name, key in keys.items() if key not in known}
    if todo:
        print(f"fast paths: timing {', '.join(CANDIDATES)} for {len(todo)} model(s) on this CPU "
              f"({threads} thread(s); once per machine, cached in {cache})", flush=True)
        with ThreadPoolExecutor(max(1, parallel)) as pool:
            measured = dict(zip(todo, pool.map(lambda m: _probe(*m, threads), todo.values())))
        known = record(cache, {keys[name]: {"measured": m, "choice": _best(m)} for name, m in measured.items()})
    return {name: known[key] for name, key in keys.items()}


def read_cache(cache: Path) -> dict[str, dict]:
    """The cache's entries by key. Content this version cannot use (cut short, not an object, another
    format, a bad entry) is left out with a warning naming the file: it is measured again, never a crash."""
    try:
        content = read_checked_json(cache, lambda c: None if c.get("format") == CACHE_FORMAT and isinstance(
            c.get("entries"), dict) else f"is not in this version's format {CACHE_FORMAT}")
    except FileNotFoundError:
        return {}
    except (OSError, DamagedFile) as exc:
        print(f"warning: fast paths: {exc}; measuring again (the file is rewritten)", file=sys.stderr, flush=True)
        return {}
    entries = {k: v for k, v in content["entries"].items() if _valid_entry(v)}
    if len(entries) < len(content["entries"]):
        print(f"warning: fast paths: {cache} has {len(content['entries']) - len(entries)} unreadable entry(ies); "
              "measuring those again", file=sys.stderr, flush=True)
    return entries


def record(cache: Path, new: dict[str, dict]) -> dict[str, dict]:
    """Add `new` entries to the cache; returns all its entries. Read, merged and written under a lock, so
    processes of several projects measuring at once lose none of each other's entries; an entry already
    there wins (every process on this machine then trains with the first choice recorded)."""
    with locked(cache.with_name(cache.name + ".lock"), LOCK_TIMEOUT_S, f"the fast-path cache {cache}"):
        entries = new | read_cache(cache)
        write_json_atomic(cache, {"format": CACHE_FORMAT, "entries": entries})
    return entries


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and entry.get("choice") in CANDIDATES and isinstance(entry.get("measured"), dict)
            and all(v is None or isinstance(v, (int, float)) for v in entry["measured"].values()))


def _key(machine: str, cfg: dict, batch: int) -> str:
    return hashlib.sha256(json.dumps([machine, cfg, batch], sort_keys=True).encode()).hexdigest()[:16]


def _best(measured: dict[str, float | None]) -> str:
    base = measured.get("fp32") or 0.0
    faster = {k: v for k, v in measured.items() if v and base and v >= MIN_GAIN * base}
    return max(faster, key=faster.get) if faster else "fp32"


def _probe(cfg: dict, batch: int, threads: int) -> dict[str, float | None]:
    """Images/s per candidate, each measured after the last in one subprocess; None for a candidate the
    subprocess did not finish in time (hung or crashed) and for those after it."""
    request = json.dumps({"model": cfg, "batch": batch, "threads": threads})
    try:
        done = subprocess.run([sys.executable, "-m", "cifarbench.fastpaths", request], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
        out = done.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
    measured = dict.fromkeys(CANDIDATES)
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        if name in measured:
            measured[name] = float(value)
    return measured


def _measure(request: dict) -> None:
    """The subprocess: time a few training steps per candidate, print `<candidate> <images/s>` as each ends."""
    import torch

    from cifarbench.models import ModelConfig, build_model_from
    from cifarbench.models.profile import throughput

    torch.set_num_threads(request["threads"])
    torch.manual_seed(0)
    model = build_model_from(ModelConfig.model_validate(request["model"]))
    for name, (autocast, channels_last) in CANDIDATES.items():
        speed = throughput(model, batch_size=request["batch"], train=True, dtype="bf16" if autocast else "fp32",
                           channels_last=channels_last, warmup=3, repeats=5, max_seconds=3.0)
        print(f"{name} {speed:.1f}", flush=True)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), so throughput is compared only on like hardware."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); without them oneDNN emulates bf16 and a
    training step is ~2.5x slower (AVX2-only EPYC, 64-channel 3x3 conv, batch 128)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def unmeasured() -> tuple[str | None, bool]:
    """(autocast dtype or None, channels_last) of a CPU run nothing was measured for: bf16 autocast where the
    CPU has bf16 instructions, never channels_last (oneDNN's AVX2 NHWC kernels hung on this project's
    2-core machines; a benchmark that never finishes measures nothing)."""
    return ("bfloat16" if native_bf16() else None), False


def describe(entry: dict) -> str:
    """One line for a run's tag: what was measured, in images/s."""
    return ", ".join(f"{k} {v:,.0f}" if v else f"{k} failed" for k, v in entry["measured"].items()) + " img/s"


if __name__ == "__main__":
    _measure(json.loads(sys.argv[1]))
