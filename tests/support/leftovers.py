"""Which processes a test run left behind.

Every process the suite starts (granian, TorchServe and its workers, PostgreSQL,
Redis, Chromium, Schemathesis, the bench) inherits RUN_MARKER from the run's
environment, so the run can find them all at its end, and only its own: another run
on the same machine has another value.
"""

import os
import uuid

import psutil

RUN_MARKER = "IMAGE_CLASSIFIER_TEST_RUN"
# Helpers a container engine starts and ends on its own schedule (the deploy tests check
# their containers through the engine itself).
ENGINE_HELPERS = {"conmon", "aardvark-dns", "netavark", "slirp4netns", "catatonit", "podman"}


def mark_this_run() -> str:
    """Set the marker that every child process of this run inherits."""
    return os.environ.setdefault(RUN_MARKER, uuid.uuid4().hex)


def left_running() -> list[psutil.Process]:
    """Live processes other than this one that carry this run's marker."""
    marker, found = os.environ.get(RUN_MARKER), []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.status() != psutil.STATUS_ZOMBIE and \
                    process.name() not in ENGINE_HELPERS and \
                    process.environ().get(RUN_MARKER) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(processes: list[psutil.Process]) -> str:
    lines = []
    for process in processes:
        try:
            lines.append(f"{process.pid} {' '.join(process.cmdline())[:300]}")
        except psutil.Error:
            continue
    return "\n".join(lines)
