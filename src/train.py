"""Train one configuration: ``python src/train.py cell=gru seq_len=200 clip=null``.

A thin Hydra entry point over :func:`rnnlab.run.train`; ``-m`` runs a sweep.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # works without `pip install -e .` too

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import rnnlab.paths  # noqa: E402,F401  (registers the ${root:} and ${cores:} resolvers)
from rnnlab import interrupts, multirun, sweep  # noqa: E402
from rnnlab.config import ConfigError, validate  # noqa: E402

EXIT_BAD_INPUT, EXIT_TRACKING_LOST = 2, 3  # interrupted: 128 + the signal (130 Ctrl-C, 143 SIGTERM)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    if multirun.in_multirun():
        interrupts.handle_stop_signals()
        if interrupts.stop_requested():  # Ctrl-C reached the sweep before this job began
            multirun.record_outcome("not_started",
                                    detail=f"the sweep was asked to stop ({interrupts.stop_requested()})")
            return None
    try:
        validate(cfg)  # before the heavy imports: a typo fails in a second
        from rnnlab.run import train

        summary = train(cfg)
    except BaseException as e:
        multirun.record_outcome(_outcome(e), getattr(e, "run_id", None), f"{type(e).__name__}: {e}")
        if isinstance(e, KeyboardInterrupt) and multirun.in_multirun():
            # stopped and saved: the whole sweep stops, and the launcher waits for its other jobs
            # to save too (raised to joblib, this would make it SIGKILL them mid-step)
            interrupts.request_stop(getattr(e, "signame", "SIGINT"))
            return None
        code = _exit_code(e)
        if code is None or multirun.in_multirun():  # in a sweep, Hydra records the job and goes on
            raise
        print(f"error: {e}" if code in (EXIT_BAD_INPUT, EXIT_TRACKING_LOST) else str(e), file=sys.stderr)
        sys.exit(code)
    if summary is None:  # a DDP worker process: rank 0 reports
        return None
    multirun.record_outcome(summary.outcome, summary.run_id)
    print("\n".join(summary.lines()), flush=True)
    return summary.val


def _exit_code(e: BaseException) -> int | None:
    """The exit code for an error we explain in one line; None: let it raise."""
    if isinstance(e, ConfigError):
        return EXIT_BAD_INPUT
    if isinstance(e, interrupts.Interrupted):
        return e.exit_code
    tracking = sys.modules.get("rnnlab.tracking")
    if tracking is not None and isinstance(e, tracking.TrackingLost):
        return EXIT_TRACKING_LOST
    return None


def _outcome(e: BaseException) -> str:
    return "interrupted" if isinstance(e, KeyboardInterrupt) else "failed"


def _exit_stopped_sweep(signame: str, at_once: bool) -> None:
    from rnnlab import tracking

    how = ("stopped at once: a run that was training continues from its last periodic checkpoint"
           if at_once else "every run that was training saved its step")
    print(f"sweep stopped by {signame} ({how}). Continue it with the same command; finished runs "
          f"are skipped:\n  {tracking.command_line()}", file=sys.stderr)
    sys.exit(interrupts.exit_code(signame))


def _run() -> None:
    try:
        main()
    except BaseException as stopped:  # a failed job, Ctrl-C, SIGTERM: the sweep's parent run still ends
        sweep.end_open_sweep(stopped)
        signame = interrupts.stopped_by()
        if signame is not None and isinstance(stopped, (KeyboardInterrupt, interrupts.Terminated)):
            _exit_stopped_sweep(signame, at_once=not isinstance(stopped, interrupts.Stopped))
        raise
    if (signame := interrupts.stopped_by()) is not None:
        _exit_stopped_sweep(signame, at_once=False)


def _exit_now(code: object) -> None:
    """Exit as ``sys.exit(code)`` does, without the interpreter's teardown of torch, Lightning
    and MLflow's modules (seconds after the last line, for nothing): first what the interpreter
    does at exit, threading's shutdown (the exit hooks that stop executors' manager threads,
    e.g. joblib's loky, then a join of the non-daemon threads) and the exit handlers (MLflow's,
    logging's, multiprocessing's). Joining the threads without those hooks hung joblib sweeps."""
    import atexit
    import os
    import threading

    if isinstance(code, str):
        print(code, file=sys.stderr)
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_Finalize calls first
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":
    try:
        _run()
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)
