"""Work a process does as it exits, in a plain Python process and in a server's worker
alike: granian's worker processes end through multiprocessing, which skips atexit but runs
its own finalizers (and registers them with atexit everywhere else)."""

from collections.abc import Callable
from multiprocessing.util import Finalize


def at_process_exit(callback: Callable[[], None]) -> None:
    Finalize(None, callback, exitpriority=10)
