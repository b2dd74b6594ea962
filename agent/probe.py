"""The replica's readiness probe (agent.readiness): exit 0 when ready, 1 when not.

    python -m agent.probe [--url http://127.0.0.1:8081] [--model NAME]
                          [--agent-state FILE] [--wait SECONDS [--while-pid PID]]

--while-pid gives up waiting as soon as process PID has exited (make run passes its
replica's): a replica that died is not waited for until the deadline.
"""

import argparse
import sys
import time
from pathlib import Path

from agent.readiness import agent_ready, check


def running(pid: int) -> bool:
    """Whether PID runs: a zombie (exited, not yet reaped by its parent) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="replica-ready", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081")
    parser.add_argument("--model", help="default: every registered model")
    parser.add_argument("--agent-state", help="the model agent's state file (AGENT_STATE_FILE)")
    parser.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")
    parser.add_argument("--while-pid", type=int, metavar="PID",
                        help="stop waiting once this process has exited")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        ok, reason = check(args.url, args.model)
        if ok and args.agent_state:
            ok, reason = agent_ready(args.agent_state)
        exited = not ok and args.while_pid is not None and not running(args.while_pid)
        if exited:
            reason = f"the replica (process {args.while_pid}) exited: {reason}"
        if ok or exited or time.monotonic() >= deadline:
            print(reason, file=sys.stderr)
            return 0 if ok else 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
