"""core.tracing without a collector: when it exports, and how a trace crosses threads
and reaches TorchServe's request headers."""

import secrets
import threading

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from core import tracing
from core.settings import Settings, SettingsError

SECRET = "k" * 40


@pytest.mark.parametrize("env, exports", [
    ({}, False),
    ({"otel_exporter_otlp_endpoint": "http://collector:4318"}, True),
    ({"otel_exporter_otlp_traces_endpoint": "http://collector:4318/v1/traces"}, True),
    ({"otel_exporter_otlp_endpoint": "http://collector:4318", "otel_sdk_disabled": True}, False),
    ({"otel_exporter_otlp_endpoint": "http://collector:4318", "otel_traces_exporter": "none"},
     False),
])
def test_export_only_when_a_collector_is_named(env, exports):
    assert tracing.exporting(Settings(jwt_secret=SECRET, **env)) is exports


def test_an_unknown_protocol_is_refused():
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        Settings(jwt_secret=SECRET, otel_exporter_otlp_protocol="http/json").validate()


def callers_span() -> NonRecordingSpan:
    """What an incoming traceparent becomes with export off."""
    return NonRecordingSpan(SpanContext(int(secrets.token_hex(16), 16),
                                        int(secrets.token_hex(8), 16), is_remote=True,
                                        trace_flags=TraceFlags(TraceFlags.SAMPLED)))


def test_a_callers_trace_reaches_the_upstream_headers_and_other_threads():
    span = callers_span()
    expected = trace.format_trace_id(span.get_span_context().trace_id)
    assert tracing.trace_id() is None
    with trace.use_span(span):
        assert tracing.trace_id() == expected
        headers = tracing.inject({"X-Request-ID": "r1"})
        assert headers["traceparent"].split("-")[1] == expected
        seen = []
        worker = threading.Thread(target=tracing.carried(lambda: seen.append(tracing.trace_id())))
        bare = threading.Thread(target=lambda: seen.append(tracing.trace_id()))
    for thread in (worker, bare):
        thread.start()
        thread.join()
    assert seen == [expected, None]  # carried into the thread; not without


def test_a_request_is_traced_only_with_a_traceparent_while_export_is_off():
    assert tracing.start_request({}, "POST /predict") is None
    span = callers_span()
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    header = f"00-{trace_id}-{trace.format_span_id(span.get_span_context().span_id)}-01"
    started = tracing.start_request({"traceparent": header}, "POST /predict")
    with tracing.span("auth"):  # no child span while not exporting: the same context
        assert tracing.trace_id() == trace_id
    tracing.finish_request(started, 200)
    assert tracing.trace_id() is None
