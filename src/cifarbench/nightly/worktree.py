"""The nightly's own git worktree, where `dvc repro` runs under the nightly preset: the user's commit (HEAD)
with the user's params.yaml (uncommitted edits included) and only `preset:` switched. The user's params.yaml
and dvc.lock are only read, so nothing that kills the nightly can leave them changed (why a worktree and not
`dvc exp run -S`: the package docstring).

Shared with the user's checkout, so the worktree costs neither a download nor a second store: the DVC cache
(data stages recorded in the user's dvc.lock are checked out from it), the MLflow store and the Optuna
storage (relative paths in params.yaml made absolute against the user's checkout).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from cifarbench.errors import CifarbenchError, ConfigError, Stopped
from cifarbench.io import atomic_path

# Inside .dvc/tmp: git-ignored by DVC's own .dvc/.gitignore, and DVC never looks for stages under .dvc/.
FOLDER = Path(".dvc/tmp/nightly")
LOCK = Path(".dvc/tmp/nightly.lock")  # held by the nightly and by its `dvc repro` while they run
PRESET_LINE = re.compile(r"^preset:[ \t]*([^\s#]+)", re.MULTILINE)  # the top-level key; its comment is kept
TARGETS = ("train",)  # the train matrix and its upstream stages (data, tune); not the report stage
# How CI cancels a job and how `kill` stops one, often sent to the nightly alone. Ctrl-C is left as it is: the
# terminal sends SIGINT to the whole process group, DVC and its stage included.
TERMINATE = (signal.SIGTERM, signal.SIGHUP)
OPTUNA_STORAGE_ENV = "CIFARBENCH_OPTUNA_STORAGE"  # read by the tune stage; overrides `tune.storage`


def with_preset(text: str, preset: str) -> str:
    """params.yaml text with the top-level `preset:` value replaced; nothing else changes."""
    if not PRESET_LINE.search(text):
        raise ConfigError("params.yaml: no top-level `preset:` line to override")
    return PRESET_LINE.sub(lambda m: m.group(0).replace(m.group(1), preset, 1), text, count=1)


def reproduce(preset: str, tracking_uri: str, storage: str, params: Path = Path("params.yaml")) -> int:
    """`dvc repro --no-run-cache train` under `preset` in the nightly worktree; DVC's exit status."""
    project = params.resolve().parent
    with exclusive(project / LOCK) as lock_fd:
        workdir = prepare(project, preset)
        env = pipeline_env(project, workdir, tracking_uri, storage)
        return run_stoppable([sys.executable, "-m", "dvc", "repro", "--no-run-cache", *TARGETS], workdir, env, lock_fd)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[int]:
    """An flock on `path` for the block; an error if another nightly (or the pipeline of a killed one,
    which inherits the lock) holds it. The kernel drops the lock when its last holder exits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CifarbenchError(f"another `cifarbench nightly` (or the pipeline of one that was stopped) is still "
                                  f"running in {path.parent / FOLDER.name}; wait for it or stop it") from None
        yield fd
    finally:
        os.close(fd)


# --- the worktree -----------------------------------------------------------------------------------------

def prepare(project: Path, preset: str) -> Path:
    """The worktree at the user's HEAD, holding the user's params.yaml (preset switched) and dvc.lock, with
    the user's DVC cache; returns the DVC project folder inside it. Earlier nights' outputs (data/, runs/,
    git-ignored) stay, so unchanged stages are not redone."""
    top = Path(_git(project, "rev-parse", "--show-toplevel"))
    commit = _git(project, "rev-parse", "--verify", "HEAD^{commit}")
    tree = project / FOLDER
    if not _reset(tree, commit):
        _recreate(top, tree, commit)
    workdir = tree / project.relative_to(top)
    if not (workdir / "dvc.yaml").is_file():
        raise CifarbenchError(f"dvc.yaml is not in commit {commit[:10]}: the nightly runs the committed pipeline")
    _write(workdir / "params.yaml", with_preset((project / "params.yaml").read_text(), preset).encode())
    _carry_lock(project / "dvc.lock", workdir / "dvc.lock")
    _share_cache(project, workdir)
    _note_uncommitted(project, commit)
    return workdir


def _reset(tree: Path, commit: str) -> bool:
    """Move an existing worktree to `commit`, tracked files as committed; False if there is none or it is
    broken (a git killed mid-checkout leaves an index.lock; a half-made `worktree add`)."""
    if not (tree / ".git").is_file():
        return False
    # `clean` without -x keeps git-ignored outputs (data/, checkpoints); runs/ is excluded by name because its
    # per-cell metrics, curves and tuned values are outputs git tracks in the user's commits, untracked here
    steps = (("checkout", "--quiet", "--force", "--detach", commit), ("clean", "--quiet", "-d", "--force", "--exclude=runs/"))
    try:
        for step in steps:
            _git(tree, *step)
        return _git(tree, "rev-parse", "--show-toplevel") == str(tree.resolve())
    except CifarbenchError:
        return False


def _recreate(top: Path, tree: Path, commit: str) -> None:
    shutil.rmtree(tree, ignore_errors=True)
    _git(top, "worktree", "prune")  # forgets the removed one, its locks included
    _git(top, "worktree", "add", "--quiet", "--force", "--detach", str(tree), commit)


def _carry_lock(source: Path, target: Path) -> None:
    """The user's pipeline state (or none): stages it records as done are restored from the shared cache,
    and the train cells of the nightly preset, recorded under another preset, are trained tonight."""
    if source.is_file():
        _write(target, source.read_bytes())
    else:
        target.unlink(missing_ok=True)


def _share_cache(project: Path, workdir: Path) -> None:
    cache = _dvc(project, "cache", "dir")
    _dvc(workdir, "cache", "dir", "--local", cache)  # .dvc/config.local of the worktree (git-ignored)


def _note_uncommitted(project: Path, commit: str) -> None:
    # `git diff --name-only`, not `status --porcelain`: the output is stripped, and porcelain's first
    # line starts with a space (" M params.yaml") that stripping would eat into the name.
    changed = [name for name in _git(project, "diff", "--name-only", "HEAD").splitlines()
               if name != "params.yaml"]
    if changed:
        print(f"cifarbench nightly: runs commit {commit[:10]} with your params.yaml; uncommitted changes to "
              f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''} are not part of it", file=sys.stderr)


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def head_commit(project: Path) -> str:
    """The commit checked out in `project`; "unknown" outside a git checkout with a commit."""
    found = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=project)
    return found.stdout.strip() if found.returncode == 0 else "unknown"


def _git(cwd: Path, *args: str) -> str:
    return _command(cwd, "git", *args)


def _dvc(cwd: Path, *args: str) -> str:
    return _command(cwd, sys.executable, "-m", "dvc", *args)


def _command(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise CifarbenchError(f"cifarbench nightly needs a git checkout with a commit and DVC: `{' '.join(cmd[-3:])}` "
                              f"in {cwd} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


# --- the shared stores --------------------------------------------------------------------------------------

def pipeline_env(project: Path, workdir: Path, tracking_uri: str, storage: str) -> dict[str, str]:
    """The environment of `dvc repro` in the worktree: this Python's `python` and `dvc` first on PATH (as
    `make repro` arranges), the worktree's code first on PYTHONPATH (the stages run the commit DVC hashes,
    not an editable install of the user's checkout), and the user's MLflow store and Optuna storage."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), env.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = shared_uri(env.get("MLFLOW_TRACKING_URI") or tracking_uri, project)
    env[OPTUNA_STORAGE_ENV] = shared_uri(env.get(OPTUNA_STORAGE_ENV) or storage, project)
    return env


def shared_uri(uri: str, project: Path) -> str:
    """`uri` as seen from any folder: a relative SQLite path or plain file path made absolute against
    `project`; server URLs and absolute paths as they are."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix):]).is_absolute():
        return prefix + str(project / uri[len(prefix):])
    if "://" not in uri and not uri.startswith("file:") and not Path(uri).is_absolute():
        return str(project / uri)
    return uri


# --- running it ---------------------------------------------------------------------------------------------

def run_stoppable(cmd: list[str], cwd: Path, env: dict, lock_fd: int) -> int:
    """Run `cmd`, passing it the nightly lock; its exit status. A SIGTERM or SIGHUP of the nightly reaches
    every process of the pipeline (DVC, stopped alone, would leave its running stage orphaned), a second one
    kills them; then the nightly stops without comparing (Stopped: exit status 128 + signal)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, pass_fds=(lock_fd,))
    received: list[int] = []

    def forward(signum, frame) -> None:
        received.append(signum)
        _signal_tree(proc.pid, signum if len(received) == 1 else signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in TERMINATE}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise Stopped(received[0])
    return code


def _signal_tree(pid: int, signum: int) -> None:
    # psutil is imported with the module, never here: a second signal arriving while a handler imported it
    # found a half-initialized module (AttributeError) and the nightly never forwarded its SIGKILL.
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signum)
