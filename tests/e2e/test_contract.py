"""The API contract: Schemathesis, with every check but response time, against the real
granian + TorchServe stack, once with a user's token and once with an admin's.

The stack is this module's own: admin operations (register, promote, unregister)
act on the archives the tests built, never on the shared stack's default.
"""

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from devstack.servers import VENV_BIN
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, DEMO_PASSWORD, DEMO_USER, start_stack

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 25  # per operation and phase: the two runs take about a minute together
# A fixed seed: a commit passes or fails the same way every run. `make fuzz` runs this
# test with new seeds (CONTRACT_SEED); what it finds becomes a fixed example test.
SEED = int(os.environ.get("CONTRACT_SEED", "24"))
RUN_S = 900  # a deadline for one run on a loaded 2-core machine (about a minute when quiet)
# Every check Schemathesis has but max_response_time, which `--checks all` turns on with
# a 10 s limit: a test asserts outcomes, never speed (registering a model took 10.4 s on
# a loaded machine). REQUEST_S is each request's deadline instead, above the gateway's
# own 180 s bound on a synchronous register.
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
          "positive_data_acceptance,missing_required_header,unsupported_method,"
          "allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth,"
          "object_level_authorization")
REQUEST_S = 200


@pytest.fixture(scope="module")
def contract_stack(tmp_path_factory, model_store, users_file, jwt_keys):
    # The run logs in again after it logs out, and fuzzes /token with the same
    # username: the per-user failed-login limit is tested in test_auth_lifecycle.py.
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("contract"), model_store,
                                      users_file, jwt_keys,
                                      login_rate_limit="100000 per minute",
                                      max_workers_per_version=2)
    yield gateway
    gateway.stop()
    torchserve.stop()


@pytest.mark.timeout(RUN_S + 300)
@pytest.mark.parametrize("username,password", [(DEMO_USER, DEMO_PASSWORD),
                                               (ADMIN_USER, ADMIN_PASSWORD)],
                         ids=["user_token", "admin_token"])
def test_schemathesis_finds_no_failure(contract_stack, tmp_path, username, password):
    started = time.monotonic()
    result = subprocess.run(
        [f"{VENV_BIN}/st", "--config-file", str(CONFIG), "run",
         f"{contract_stack.url}/openapi.json", "--checks", CHECKS,
         "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
         "--request-timeout", str(REQUEST_S),
         "--report", "junit", "--report-dir", str(tmp_path)],
        env={**os.environ, "ST_USERNAME": username, "ST_PASSWORD": password,
             "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path, capture_output=True, text=True, timeout=RUN_S)
    summary = result.stdout[result.stdout.rfind("SUMMARY"):]
    cases = re.search(r"(\d+) generated", summary)
    print(f"schemathesis as {username}, seed {SEED}: {cases.group(1) if cases else '?'} cases "
          f"in {time.monotonic() - started:.0f} s")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert cases and int(cases.group(1)) > 100, summary
    selected = re.search(r"Selected: (\d+)/(\d+)\n\s*Tested: (\d+)", summary)
    assert selected and len(set(selected.groups())) == 1, summary  # every operation tested
