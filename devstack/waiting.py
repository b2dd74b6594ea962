"""One way to wait for a server or a condition in the tests and the bench.

A probe that raises or returns something falsy means "not yet", never "failed": on a
cold, loaded machine servers accept connections before they answer, and answer slowly.
Only the deadline ends a wait, or the server's own death, and either ends it with what
the server logged.
"""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# Deadlines for a new 2-core machine whose cores are both busy with other work:
# a gateway that imports the app, a TorchServe that loads a model, a container.
SERVER_START_S = 180
MODEL_READY_S = 300
CONTAINER_READY_S = 600


class Gone(RuntimeError):
    """The awaited process exited: waiting longer cannot help."""


def wait_for(probe: Callable[[], T], *, timeout: float, what: str,
             alive: Callable[[], bool] | None = None, log: Callable[[], str] | None = None,
             interval: float = 0.2) -> T:
    """probe()'s first truthy result within `timeout` seconds.

    Any exception from probe() counts as "not yet". `alive` ends the wait early when
    it says the process exited; `log` gives the tail that a failure message carries.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        if alive is not None and not alive():
            raise Gone(f"{what}: the process exited\n{log() if log else ''}")
        try:
            result = probe()
            if result:
                return result
            last = f"probe answered {result!r}"
        except Exception as exc:  # a failed probe is "not yet" until the deadline
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s (last probe: {last})\n"
                               f"{log() if log else ''}")
        time.sleep(interval)
