"""Ctrl-C and SIGTERM, in one place: how a run or a sweep is asked to stop, and how it says so.

A first signal asks a run (or a sweep) to stop at its next step, saved; a second stops it at
once. The pieces, each used by one caller:

- :class:`Requests`: whether a signal is a second request (:class:`rnnlab.callbacks.StopAtStep`
  during training, :func:`handle_stop_signals` around it);
- the sweep's stop file: :func:`handle_stop_signals` makes a first signal in any process of a
  multirun write ``<sweep dir>/stop``; every job's run reads it (:func:`stop_file`,
  :func:`read_stop`), a job not yet started does not start (:func:`stop_requested`), and the
  launcher learns which signal stopped it (:func:`stopped_by`);
- :func:`raise_on_sigterm` / :func:`restore_signals`: outside a Trainer, SIGTERM ends a run
  KILLED instead of leaving it RUNNING; :func:`signal_of` names the signal that stopped one;
- the exceptions that carry a stop out: :class:`Interrupted` (a run, KILLED, with the command
  that continues it), :class:`Stopped` (a tuning sweeper after a stopped batch) and
  :class:`Terminated` (SIGTERM at the launcher).

One request can arrive twice: GNU make, on SIGTERM, sends SIGTERM to its children, who also got
the one sent to the process group (a scheduler's ``kill -TERM -<pgid>`` of ``make train``
delivers two within a millisecond). A repeat that close is the same request; a person pressing
Ctrl-C again takes far longer than ``SAME_REQUEST_S``.

No Lightning here (a sweep's launching process imports this); Lightning's own exception for
SIGTERM is imported where a run raises it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rnnlab.multirun import sweep_dir as _multirun_dir

SAME_REQUEST_S = 0.25
STOP_FILE = "stop"  # in the sweep dir: the sweep was asked to stop; its text is the signal's name


class Requests:
    """The first signal's name and time; whether a later one is a second request."""

    def __init__(self) -> None:
        self.first: str | None = None
        self._at = 0.0

    def note(self, name: str) -> bool:
        """Record a signal; True when it is a second request (stop at once)."""
        now = time.monotonic()
        if self.first is None:
            self.first, self._at = name, now
            return False
        return now - self._at >= SAME_REQUEST_S


def exit_code(signame: str) -> int:
    """What a process stopped by ``signame`` exits with: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signal.Signals[signame])


# -- the sweep's stop file --------------------------------------------------------------------
def stop_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / STOP_FILE


def stop_file() -> Path | None:
    """Where a job of a sweep learns that the sweep was asked to stop; None outside a sweep."""
    where = _multirun_dir()
    return None if where is None else stop_path(where)


def read_stop(path: Path | None) -> str | None:
    """The signal ("SIGINT" | "SIGTERM") a stop file records, or None when there is none."""
    if path is None or not path.exists():
        return None
    return path.read_text().strip() or "SIGINT"


def stop_requested() -> str | None:
    """The signal that asked this process's sweep to stop, or None."""
    return read_stop(stop_file())


def request_stop(signame: str) -> None:
    """Ask every job of this process's sweep to stop (idempotent: the first signal's name stays)."""
    path = stop_path(_stopping["sweep_dir"]) if _stopping.get("sweep_dir") else stop_file()
    if path is not None and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(signame)


_stopping: dict[str, Any] = {}  # this process's handler: the sweep dir, whether to speak, the signals seen


def handle_stop_signals(sweep_dir: str | Path | None = None, launcher: bool = False) -> None:
    """From now on in this process, a first Ctrl-C or SIGTERM asks the sweep to stop (see
    :mod:`rnnlab.sweep`) and a second raises as the signal would by default. The launching
    process (``launcher``) says what is happening; a job's process, where a run's
    :class:`~rnnlab.callbacks.StopAtStep` takes the signals over during training, is quiet."""
    if threading.current_thread() is not threading.main_thread():
        return
    if sweep_dir is not None or not _stopping:
        _stopping.update(sweep_dir=sweep_dir, launcher=launcher, signals=Requests())
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_stop_signal)


def _on_stop_signal(signum, frame) -> None:
    name = signal.Signals(signum).name
    first = _stopping["signals"].first
    if _stopping["signals"].note(name):  # a second request: at once, as before
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(128 + signum)
    if first is not None:  # the first again (see the module's docstring)
        return
    request_stop(name)
    if _stopping.get("launcher"):  # os.write: print() is not reentrant, and a signal can interrupt one
        again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        os.write(2, f"\nsweep: {name}: each running job stops at its next step, saved; no new job starts. "
                    f"{again} again stops at once, unsaved.\n".encode())


def stopped_by() -> str | None:
    """In the launching process: the signal that asked its sweep to stop (whichever process got
    it), or None."""
    return read_stop(stop_path(_stopping["sweep_dir"])) if _stopping.get("sweep_dir") else None


# -- one run, outside a Trainer ---------------------------------------------------------------
def _sigterm(signum, frame):
    # Inside fit or test, Lightning's own handler runs first and this one after it: there the
    # loop stops at the next batch by itself, so raise only where no Trainer is running.
    if signal.getsignal(signal.SIGTERM) is _sigterm:
        from pytorch_lightning.utilities.exceptions import SIGTERMException

        raise SIGTERMException


def raise_on_sigterm() -> tuple | None:
    """SIGTERM (a scheduler's pre-emption or time limit) ends the run KILLED instead of
    leaving it RUNNING. Returns the SIGTERM and SIGINT handlers as they were (None off the
    main thread, where signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _sigterm), signal.getsignal(signal.SIGINT)


def restore_signals(previous: tuple | None) -> None:
    """Put back what :func:`raise_on_sigterm` returned."""
    if previous is None:
        return
    sigterm, sigint = previous
    signal.signal(signal.SIGTERM, sigterm)
    # Lightning ignores SIGINT once it has caught a Ctrl-C; give back the handler the run began
    # with (a sweep's, which stops the sweep; else Python's KeyboardInterrupt).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        usable = callable(sigint) and sigint is not signal.SIG_IGN
        signal.signal(signal.SIGINT, sigint if usable else signal.default_int_handler)


def signal_of(e: BaseException, in_lightning: BaseException | None) -> str | None:
    """SIGINT or SIGTERM if one stopped the run. Lightning turns Ctrl-C inside ``fit`` or
    ``test`` into ``sys.exit(1)``; the KeyboardInterrupt it caught is ``in_lightning``."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    if isinstance(e, SIGTERMException):
        return "SIGTERM"
    if isinstance(e, KeyboardInterrupt) or (isinstance(e, SystemExit) and isinstance(in_lightning, KeyboardInterrupt)):
        return "SIGINT"
    return None


# -- what carries a stop out ------------------------------------------------------------------
class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a run, which is now KILLED. With a checkpoint on disk,
    ``resume=<run id>`` continues it; without one (stopped before its first step ended),
    the message says so and gives the command that starts it again."""

    def __init__(self, signame: str, run_id: str, checkpoint: str | None, saved_step: int | None):
        from rnnlab import tracking

        self.signame, self.run_id, self.checkpoint, self.saved_step = signame, run_id, checkpoint, saved_step
        self.exit_code = exit_code(signame)
        head = f"{signame}: run {run_id} stopped and marked KILLED"
        if checkpoint is None:
            text = (f"{head}; nothing was saved: it stopped before its first training step ended, so there is "
                    f"no checkpoint to resume from. Start it again with:\n  {tracking.command_line()}")
        else:
            at = f"step {saved_step}" if saved_step is not None else "its last checkpoint"
            text = f"{head}; saved at {at} ({checkpoint}). Continue it with:\n  {tracking.resume_command(run_id)}"
        super().__init__(text)

    def __reduce__(self):  # picklable, so it crosses from joblib's workers to the launcher (else BrokenProcessPool)
        return type(self), (self.signame, self.run_id, self.checkpoint, self.saved_step)


class Stopped(KeyboardInterrupt):
    """A sweeper that launches batches (rnnlab.tune) stops after one that was asked to stop:
    every job of it has saved and ended."""


class Terminated(SystemExit):
    """SIGTERM reached the launching process (a scheduler's time limit, ``kill``)."""
