"""How a process ends without losing records: at interpreter exit, on SIGTERM, and in
`multiprocessing` children.

- Normal exit (and SIGINT, whose KeyboardInterrupt ends the interpreter normally): an `atexit`
  hook flushes.
- `multiprocessing` children (`Process`, `Pool` workers; fork, forkserver and spawn) end through
  `os._exit`, which skips `atexit`; multiprocessing runs its own exit finalizers first, so one is
  registered in each child that records anything.
- SIGTERM (how systemd, Docker and Kubernetes stop a service): a handler flushes within the
  exit timeout, then does what was there before: the user's own handler is called, or the
  default action (the process ends, killed by SIGTERM). Not in `multiprocessing` workers:
  `Pool.terminate()` stops them with SIGTERM, and delaying their end can hang the pool's own
  shutdown, so what a terminated worker had not stored yet is lost (end pools with
  `close(); join()`).

Each flush is bounded by `flush_at_exit_timeout_s`; what cannot be stored in time is counted
and logged as dropped at exit.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.util
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("obsdeco")

_FLUSH_THREAD_GRACE_S = 2.0
"""How much longer than the exit timeout the signal handler waits for its flush thread."""

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class ExitHooks:
    """The hooks that flush a process's records before it ends; installed once per process."""

    def __init__(
        self,
        flush_at_exit: Callable[[], None],
        flush: Callable[[float], object],
        timeout: Callable[[], float],
    ) -> None:
        self._flush_at_exit = flush_at_exit
        self._flush = flush
        self._timeout = timeout
        self._lock = threading.Lock()
        self._child_finalizer_pid: int | None = None
        self._previous_sigterm: _Handler = None
        self._sigterm_installed = False
        atexit.register(flush_at_exit)

    def install(self) -> None:
        """Install what this process's way of ending needs (once; the SIGTERM handler only
        from the main thread): called when the process starts recording, and by `patch_all()`."""
        with self._lock:
            self._register_child_finalizer()
            self._install_sigterm_handler()

    def _register_child_finalizer(self) -> None:
        pid = os.getpid()
        if multiprocessing.parent_process() is None or self._child_finalizer_pid == pid:
            return
        multiprocessing.util.Finalize(None, self._flush_at_exit, exitpriority=100)
        self._child_finalizer_pid = pid

    def _install_sigterm_handler(self) -> None:
        if self._sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        if multiprocessing.parent_process() is not None:
            return  # see _on_sigterm
        try:
            previous = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError):  # not the main interpreter, or signals unavailable
            return
        self._previous_sigterm = previous
        self._sigterm_installed = True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous_sigterm
        if multiprocessing.parent_process() is not None:
            # A multiprocessing worker (which inherits this handler under fork): SIGTERM is how
            # `Pool.terminate()` stops it, and delaying its end can hang the pool's shutdown.
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        timeout = self._timeout()
        if callable(previous):  # the user's handler decides whether the process ends
            self._in_own_thread(lambda: self._flush(timeout), timeout)
            previous(signum, frame)
            return
        if previous == signal.SIG_IGN:
            self._in_own_thread(lambda: self._flush(timeout), timeout)
            return
        self._in_own_thread(self._flush_at_exit, timeout)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    @staticmethod
    def _in_own_thread(work: Callable[[], object], timeout: float) -> None:
        # This handler may have interrupted the main thread inside obsdeco while it held a
        # lock the flush needs: the flush runs on a thread of its own, waited for a bounded time.
        flusher = threading.Thread(target=work, name="obsdeco-sigterm-flush", daemon=True)
        flusher.start()
        flusher.join(timeout + _FLUSH_THREAD_GRACE_S)

    def after_fork_in_child(self) -> None:
        """A forked child keeps its parent's SIGTERM handler (this one) and registers its own
        multiprocessing finalizer when it records."""
        self._lock = threading.Lock()
        self._child_finalizer_pid = None
