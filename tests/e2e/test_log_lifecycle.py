"""The prediction log's lifecycle through real gateways (granian) and a real model
replica, on SQLite and on a real PostgreSQL: a purge of a million rows while clients
predict, erasure, pseudonymous rows, usage reports and the export."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import psutil
import pytest
import requests
from sqlalchemy import func, select

from core.database.engine import database_engine
from core.database.tables import predictions
from devstack import images
from devstack.backends import Postgres, postgres_available, required_or_skip
from devstack.log_rows import synthesize
from devstack.servers import ROOT, GatewayServer
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, start_stack
from devstack.waiting import wait_for
from gateway.identity.users import UserStore
from gateway.models.rollouts.guard import percentile
from gateway.prediction_log import privacy as log_privacy
from tests.support.usage import direct_usage

pytestmark = pytest.mark.e2e
PASSWORD = "lifecycle-pass"
SYNTHETIC_ROWS = 1_000_000
CLIENTS = 4


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def life(request, tmp_path_factory, model_store, users_file, jwt_keys):
    """(replica, gateway, engine) on an empty database of the module's own."""
    tmp = tmp_path_factory.mktemp(f"life-{request.param}")
    postgres = None
    if request.param == "postgresql":
        required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
        postgres = Postgres().start()
    url = postgres.url if postgres else f"sqlite:///{tmp / 'log.db'}"
    try:
        replica, gateway = start_stack(tmp, model_store, users_file, jwt_keys,
                                       database_url=url)
        engine = database_engine(url)
        yield replica, gateway, engine
        engine.dispose()
        gateway.stop()
        replica.stop()
    finally:
        if postgres:
            postgres.stop()


def user(users_file, name: str) -> str:
    UserStore(users_file).set_user(name, PASSWORD, "user")
    return name


def predict(gateway, token: str, filename: str = "cat.jpg") -> requests.Response:
    return requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                         files={"file": (filename, images.jpeg(), "image/jpeg")}, timeout=120)


def count(engine, *where) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(predictions)
                                  .where(*where)).scalar()


def clients(gateway, token: str, until) -> list[tuple[int, float]]:
    """CLIENTS callers of /predict until `until()` says stop: (status, seconds) each."""
    def caller(_):
        calls = []
        while not until(calls):
            started = time.perf_counter()
            status = predict(gateway, token).status_code
            calls.append((status, time.perf_counter() - started))
        return calls

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [call for calls in pool.map(caller, range(CLIENTS)) for call in calls]


def p99_ms(calls) -> float:
    return percentile([seconds for _, seconds in calls], 0.99) * 1000


def test_a_purge_of_a_million_rows_while_clients_predict(life, users_file):
    _, gateway, engine = life
    now = datetime.now(timezone.utc)
    synthesize(engine, SYNTHETIC_ROWS, 1, [now - timedelta(days=40), now - timedelta(days=10)],
               "synthetic")
    token = get_token(gateway, user(users_file, "purge_client"), PASSWORD)
    quiet = clients(gateway, token, lambda calls: len(calls) >= 25)
    purge = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.db", "--database-url", str(engine.url.render_as_string(
            hide_password=False)), "purge", "--days", "30"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        during = clients(gateway, token,
                         lambda calls: purge.poll() is not None and len(calls) >= 5)
        output, _ = purge.communicate(timeout=600)
    finally:
        if purge.poll() is None:
            purge.kill()
    print(f"\n{engine.dialect.name}: {output.strip()}; /predict p99 {p99_ms(quiet):.0f} ms "
          f"without a purge ({len(quiet)} calls), {p99_ms(during):.0f} ms during it "
          f"({len(during)} calls)")
    assert purge.returncode == 0, output
    assert f"purged {SYNTHETIC_ROWS // 2} rows" in output
    assert [status for status, _ in quiet + during] == [200] * (len(quiet) + len(during))
    cutoff = now - timedelta(days=30)
    assert count(engine, predictions.c.created_at < cutoff) == 0
    assert count(engine, predictions.c.username == "synthetic") == SYNTHETIC_ROWS // 2
    assert count(engine, predictions.c.username == "purge_client") == len(quiet) + len(during)


def test_an_erasure_deletes_a_users_rows_and_ends_their_tokens(life, users_file):
    _, gateway, engine = life
    name = user(users_file, "erase_me")
    token = get_token(gateway, name, PASSWORD)
    assert [predict(gateway, token).status_code for _ in range(3)] == [200] * 3
    admin = get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
    erased = requests.delete(f"{gateway.url}/users/{name}/predictions", timeout=120,
                             headers={"Authorization": f"Bearer {admin}"})
    assert erased.status_code == 200, erased.text
    assert erased.json()["rows_deleted"] == 3 and erased.json()["tokens_revoked"] is True
    assert count(engine, predictions.c.username == name) == 0
    refused = predict(gateway, token)
    assert refused.status_code == 401 and "erased" in refused.json()["detail"]
    assert count(engine, predictions.c.username == name) == 0
    fresh = get_token(gateway, name, PASSWORD)
    assert predict(gateway, fresh).status_code == 200

    cli = subprocess.run([sys.executable, "-m", "gateway.cli.users", "erase", name], cwd=ROOT,
                         env={**os.environ, "DATABASE_URL": engine.url.render_as_string(
                             hide_password=False)}, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert f"erased 1 prediction-log rows of '{name}'" in cli.stdout
    assert count(engine, predictions.c.username == name) == 0
    wait_for(lambda: predict(gateway, fresh).status_code == 401, timeout=60,
             what="the CLI's erasure to reach the gateway")


def test_a_pseudonymous_log_keeps_no_name_and_still_lists_a_callers_rows(life, users_file,
                                                                         tmp_path, jwt_keys):
    replica, stack_gateway, engine = life
    keys = tmp_path / "log-keys.json"
    log_privacy.new_key(keys)
    gateway = GatewayServer(replica, tmp_path / "pseudonymous", jwt_keys_file=jwt_keys,
                            users_file=users_file, database_url=engine.url.render_as_string(
                                hide_password=False), prediction_log_usernames="keyed-hash",
                            prediction_log_filenames="extension-only",
                            prediction_log_keys_file=keys)
    gateway.start()
    try:
        gateway.wait_up()
        name = user(users_file, "anna_pseudo")
        token = get_token(gateway, name, PASSWORD)
        answers = [predict(gateway, token, "IMG_berlin_anna.jpg") for _ in range(3)]
        assert [a.status_code for a in answers] == [200] * 3
        assert answers[0].json()["filename"] == "IMG_berlin_anna.jpg"  # the contract holds
        with engine.connect() as connection:
            everything = "\n".join(str(tuple(r)) for r in connection.execute(
                select(predictions).where(predictions.c.username != "synthetic")))
        assert "anna_pseudo" not in everything and "berlin" not in everything
        listed = requests.get(gateway.url + "/predictions", timeout=60,
                              headers={"Authorization": f"Bearer {token}"}).json()["items"]
        assert len(listed) == 3
        assert {row["username"] for row in listed} == {
            f"hmac:k1:{row['username'].rsplit(':', 1)[1]}" for row in listed}
        assert {row["filename"] for row in listed} == {None}
        assert {row["extension"] for row in listed} == {"jpg"}
    finally:
        gateway.stop()


def test_usage_reports_equal_a_direct_count(life, users_file):
    _, gateway, engine = life
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    name = user(users_file, "usage_user")
    token = get_token(gateway, name, PASSWORD)
    statuses = [predict(gateway, token).status_code for _ in range(4)]
    statuses.append(requests.post(gateway.url + "/predict", timeout=60, files={
        "file": ("x.jpg", b"not an image", "image/jpeg")},
        headers={"Authorization": f"Bearer {token}"}).status_code)
    assert statuses == [200] * 4 + [415]
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    admin = get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
    with engine.connect() as connection:
        rows = connection.execute(select(predictions).where(
            predictions.c.created_at >= since, predictions.c.created_at < until)).all()
    for group_by in ("day", "user", "version"):
        for who, names in ((admin, None), (token, (name,))):
            answer = requests.get(gateway.url + "/usage", timeout=60, params={
                "from": since.isoformat(), "to": until.isoformat(), "group_by": group_by},
                headers={"Authorization": f"Bearer {who}"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["groups"] == direct_usage(rows, group_by, names), group_by
    mine = requests.get(gateway.url + "/usage", timeout=60, params={"group_by": "user"},
                        headers={"Authorization": f"Bearer {token}"}).json()["groups"]
    assert [(g["key"], g["requests"], g["successes"], g["errors"]["client"]) for g in mine] == [
        (name, 5, 4, 1)]


def test_an_export_of_100000_rows_streams_in_bounded_memory(life):
    _, gateway, engine = life
    day = datetime(2020, 1, 1, tzinfo=timezone.utc)
    synthesize(engine, 100_000, 10_000_001, [day + timedelta(seconds=s) for s in range(10)],
               "exported", filename="f" * 250 + ".jpg")
    admin = get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
    workers = [p for p in psutil.Process(gateway.proc.pid).children(recursive=True)
               if "gateway-server" in " ".join(p.cmdline())] or [psutil.Process(gateway.proc.pid)]
    for worker in workers:  # each worker's peak RSS from now on (VmHWM)
        with open(f"/proc/{worker.pid}/clear_refs", "w") as refs:
            refs.write("5")
    before = max(worker.memory_info().rss for worker in workers)
    params = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    with requests.get(gateway.url + "/predictions/export", params=params, stream=True,
                      timeout=600, headers={"Authorization": f"Bearer {admin}"}) as answer:
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(
            "application/x-ndjson")
        ids, size = [], 0
        for line in answer.iter_lines():
            size += len(line) + 1
            ids.append(json.loads(line)["id"])
    peak = max(_peak_rss(worker.pid) for worker in workers)
    print(f"\n{engine.dialect.name}: exported {len(ids)} rows, {size / 2**20:.1f} MiB; "
          f"gateway worker RSS {before / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB")
    assert len(ids) == 100_000 and ids == sorted(ids)
    assert peak - before < size / 4  # a quarter of what went out: not held in memory

    resumed = requests.get(gateway.url + "/predictions/export", timeout=600, headers={
        "Authorization": f"Bearer {admin}"}, params={**params, "after": ids[59_999],
                                                      "format": "csv"})
    lines = resumed.text.splitlines()
    assert resumed.status_code == 200 and lines[0].startswith("id,request_id,username")
    assert [int(line.split(",", 1)[0]) for line in lines[1:]] == ids[60_000:]


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
