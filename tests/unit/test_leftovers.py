"""The end-of-suite check finds a process the run started and left, and only the run's."""

import os
import subprocess
import sys

from devstack.waiting import wait_for
from tests.support import leftovers

SLEEPER = [sys.executable, "-c", "import time; time.sleep(300)"]


def test_a_child_left_running_is_found_until_it_ends():
    child = subprocess.Popen(SLEEPER)
    try:
        assert wait_for(lambda: child.pid in {p.pid for p in leftovers.left_running()},
                        timeout=60, what="the child listed")
        assert str(child.pid) in leftovers.describe(leftovers.left_running())
    finally:
        child.kill()
        child.wait(60)
    assert child.pid not in {p.pid for p in leftovers.left_running()}


def test_another_runs_process_is_not_ours():
    env = {**os.environ, leftovers.RUN_MARKER: "another-run"}
    other = subprocess.Popen(SLEEPER, env=env)
    try:
        assert other.pid not in {p.pid for p in leftovers.left_running()}
    finally:
        other.kill()
        other.wait(60)
