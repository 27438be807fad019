"""Put on PYTHONPATH by the kill probes (test_kill_pipeline.py), so every Python process of a probed
`dvc repro` loads it at start-up; it does nothing unless asked:

PROBE_KILL_RENAME=<suffix>  SIGKILL the whole process group (dvc, the stage, its workers) when a rename's
                            destination ends with <suffix>: the kill lands at an exact point of a stage.
PROBE_KILL_AFTER_RENAME=<suffix>  the same, just after the rename: the file is in place when it lands.
PROBE_INTERRUPT_RENAME=<suffix>  in an executor's worker, when a rename's destination ends with <suffix>: send
                            SIGINT (Ctrl-C) to the worker's parent, the coordinator, and wait there (before the
                            rename) for the coordinator to stop the worker.
PROBE_KILL_TRIAL=1          in an executor's worker, at its first Optuna journal write (a trial reporting
                            an epoch), SIGKILL the tune stage process (the worker's parent); its workers
                            die with it, `dvc repro` sees the stage killed.
"""

import os
import signal

if os.environ.get("PROBE_KILL_RENAME"):
    def _dying(real, suffix=os.environ["PROBE_KILL_RENAME"]):
        def rename(src, dst, *args, **kwargs):
            if os.fspath(dst).endswith(suffix):
                os.killpg(os.getpgid(0), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)
        return rename

    os.rename, os.replace = _dying(os.rename), _dying(os.replace)

if os.environ.get("PROBE_KILL_AFTER_RENAME"):
    def _dying_after(real, suffix=os.environ["PROBE_KILL_AFTER_RENAME"]):
        def rename(src, dst, *args, **kwargs):
            done = real(src, dst, *args, **kwargs)
            if os.fspath(dst).endswith(suffix):
                os.killpg(os.getpgid(0), signal.SIGKILL)
            return done
        return rename

    os.rename, os.replace = _dying_after(os.rename), _dying_after(os.replace)

if os.environ.get("PROBE_INTERRUPT_RENAME"):
    def _interrupting(real, suffix=os.environ["PROBE_INTERRUPT_RENAME"]):
        def rename(src, dst, *args, **kwargs):
            import multiprocessing
            import time

            if os.fspath(dst).endswith(suffix) and multiprocessing.parent_process() is not None:
                os.kill(os.getppid(), signal.SIGINT)
                time.sleep(600)
            return real(src, dst, *args, **kwargs)
        return rename

    os.rename, os.replace = _interrupting(os.rename), _interrupting(os.replace)

if os.environ.get("PROBE_KILL_TRIAL"):
    def _fsync(fd, real=os.fsync):
        import multiprocessing

        if multiprocessing.parent_process() is not None:  # a worker: the coordinator is its parent
            os.kill(os.getppid(), signal.SIGKILL)
        return real(fd)

    os.fsync = _fsync
