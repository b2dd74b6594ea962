"""What every test run shares: a marker on every process it starts, and the check at its
end that none of them is still running. Imports neither torch nor the gateway's stack:
`make unit` stays fast."""

import pytest

from devstack.waiting import wait_for
from tests.support import leftovers

leftovers.mark_this_run()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running():
    """After the last test, pass or fail, no process the suite started is still running.
    Set up before any other fixture, so torn down after all of them."""
    yield
    try:
        wait_for(lambda: not leftovers.left_running(), timeout=60,
                 what="every process the suite started to exit", interval=0.5)
    except TimeoutError:
        left = leftovers.left_running()
        described = leftovers.describe(left)
        for process in left:
            process.kill()
        pytest.fail(f"processes the suite started were still running (now killed):\n"
                    f"{described}")
