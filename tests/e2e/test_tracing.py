"""Traces with real parts: a gateway (granian) and a model replica (TorchServe, the
handler) exporting OTLP/HTTP to a receiver that decodes the real protobufs; and, with
export off, a caller's `traceparent` honoured from the gateway to the handler."""

import json
import secrets
import threading

import pytest
import requests

from devstack import images
from devstack.otlp import OtlpReceiver
from devstack.stack import get_token, start_stack
from devstack.waiting import wait_for

pytestmark = pytest.mark.e2e
GATEWAY_STAGES = {"auth", "quota", "read", "check", "upstream", "log"}
BATCH_STAGES = {"preprocess", "inference", "postprocess"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory, model_store, users_file, jwt_keys):
    """(receiver, replica, gateway): both export their spans to the receiver."""
    receiver = OtlpReceiver().start()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    try:
        replica, gateway = start_stack(tmp_path_factory.mktemp("traced"), model_store,
                                       users_file, jwt_keys, replica_env=env,
                                       **{k.lower(): v for k, v in env.items()})
    except BaseException:
        receiver.stop()
        raise
    yield receiver, replica, gateway
    gateway.stop()
    replica.stop()
    receiver.stop()


def predict(gateway, token: str, headers: dict | None = None) -> requests.Response:
    answer = requests.post(gateway.url + "/predict", files={"file": ("x.jpg", images.jpeg())},
                           headers={"Authorization": f"Bearer {token}", **(headers or {})},
                           timeout=120)
    assert answer.status_code == 200, answer.text
    return answer


def row_trace_id(gateway, token: str, request_id: str) -> str:
    rows = requests.get(gateway.url + "/predictions", headers={"Authorization": f"Bearer {token}"},
                        timeout=60).json()["items"]
    return next(row["trace_id"] for row in rows if row["request_id"] == request_id)


def test_one_prediction_is_one_trace_across_gateway_and_handler(traced):
    receiver, _, gateway = traced
    token = get_token(gateway)
    request_id = predict(gateway, token).headers["X-Request-ID"]
    trace_id = row_trace_id(gateway, token, request_id)
    assert len(trace_id) == 32 and int(trace_id, 16)

    def whole() -> list:
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        names = {s.name for s in spans}
        return spans if GATEWAY_STAGES | {"POST /predict", "request"} <= names else []

    spans = wait_for(whole, timeout=60, what="the trace's gateway and handler spans",
                     log=lambda: str(receiver.spans()))
    by_name = {s.name: s for s in spans}
    server = by_name["POST /predict"]
    assert server.service == "image-classifier-gateway" and server.parent_id == ""
    for stage in GATEWAY_STAGES:
        assert by_name[stage].parent_id == server.span_id, stage
    handled = by_name["request"]
    assert handled.service == "image-classifier-handler"
    assert handled.parent_id == by_name["upstream"].span_id  # traceparent from the call
    assert handled.attributes["request_id"] == request_id
    [(batch_trace, batch_id)] = handled.links
    batch = wait_for(lambda: next((s for s in receiver.spans() if s.span_id == batch_id), None),
                     timeout=60, what="the batch's span")
    assert batch.name == "batch" and batch.trace_id == batch_trace
    stages = {s.name for s in receiver.spans() if s.parent_id == batch_id}
    assert stages == BATCH_STAGES
    log = (gateway.log_path.read_text(errors="replace"))
    lines = [json.loads(line) for line in log.splitlines()
             if line.startswith("{") and f'"request_id": "{request_id}"' in line]
    assert [line["trace_id"] for line in lines if line.get("event") == "request"] == [trace_id]


def test_concurrent_requests_link_to_the_batch_they_ran_in(traced):
    """Rounds of 4 concurrent calls until TorchServe batches 4 of them together: 4
    request spans, each in its caller's trace, linked to that one batch span."""
    receiver, _, gateway = traced
    token = get_token(gateway)

    def round_of_four() -> list:
        threads = [threading.Thread(target=predict, args=(gateway, token)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [s for s in receiver.spans()
                if s.name == "batch" and s.attributes.get("batch.size") == 4]

    [batch, *_] = wait_for(round_of_four, timeout=300, interval=1,
                           what="TorchServe running 4 requests in one batch")

    def linked() -> list:
        return [s for s in receiver.spans()
                if s.name == "request" and (batch.trace_id, batch.span_id) in s.links]

    requests_in_batch = wait_for(lambda: len(linked()) == 4 and linked(), timeout=60,
                                 what="4 request spans linked to the batch")
    assert len({s.trace_id for s in requests_in_batch}) == 4  # one trace per caller
    # and the batch links back to each caller's span (the gateway's upstream call)
    assert {(s.trace_id, s.parent_id) for s in requests_in_batch} == set(batch.links)


def test_a_callers_traceparent_is_honoured_with_export_off(stack):
    """The shared stack exports nothing, yet the caller's trace id reaches the log line,
    the prediction-log row and the handler."""
    replica, gateway = stack
    token = get_token(gateway)
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    answer = predict(gateway, token, {"traceparent": f"00-{trace_id}-{parent}-01"})
    request_id = answer.headers["X-Request-ID"]
    assert row_trace_id(gateway, token, request_id) == trace_id
    assert f'"trace_id": "{trace_id}"' in gateway.log_path.read_text(errors="replace")
    wait_for(lambda: any(trace_id in path.read_text(errors="replace")
                         for path in replica.run_dir.rglob("*.log")),
             timeout=60, what="the handler's log line with the caller's trace id")
