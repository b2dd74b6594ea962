"""The model agent's command line (agent.model_agent): runs until SIGTERM or SIGINT.

    python -m agent        # or model-agent; settings from the environment: DATABASE_URL,
                           # AGENT_STORE, AGENT_STATE_FILE, REPLICA_ID, TORCHSERVE_*, ...
"""

import argparse
import logging
import signal
import sys
import threading

from agent.model_agent import ModelAgent, log
from core.database.engine import database_engine
from core.settings import cli_settings
from core.torchserve_client import TorchServeClient


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="model-agent", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s model_agent %(levelname)s %(message)s")
    settings = cli_settings()
    agent = ModelAgent(settings, database_engine(settings.database_url),
                       TorchServeClient(settings))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("replica %s: store %s, TorchServe %s", agent.replica_id, settings.agent_store,
             settings.torchserve_management_url)
    agent.run(settings.agent_interval_seconds, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
