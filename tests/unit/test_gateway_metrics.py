"""The metrics directory that every worker process writes to."""

import os
import subprocess
import sys

from gateway.metrics import forget_dead_processes


def test_a_dead_workers_live_gauges_go_and_the_living_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    files = [f"gauge_livemax_{dead}.db", f"gauge_livemin_{dead}.db",
             f"gauge_livemax_{os.getpid()}.db", f"counter_{dead}.db", "gauge_all_1.db"]
    for name in files:
        (tmp_path / name).write_bytes(b"")
    forget_dead_processes(str(tmp_path))
    # Counters of the dead stay (their counts still add up); live gauges of the living too.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files[2:])
