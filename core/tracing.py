"""Traces (OpenTelemetry), Flask-free: a span per request with children for its
stages, continued across TorchServe by W3C `traceparent` (the handler opens its own).

Export is off unless the standard variables name a collector (OTEL_EXPORTER_OTLP_ENDPOINT
or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; OTLP over http/protobuf or grpc by
OTEL_EXPORTER_OTLP_PROTOCOL; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it
off). Off, an incoming `traceparent` is still honoured: the request's span carries it,
so its trace id is logged, recorded in the prediction log and passed on; no other span
is made, and a request without one costs nothing.
"""

from collections.abc import Callable, Mapping
from contextlib import nullcontext

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from core.settings import Settings

SERVICE_NAME = "image-classifier-gateway"
tracer = trace.get_tracer("gateway")
_exporting = False  # set once per process by configure()


def exporting(settings: Settings) -> bool:
    return bool(settings.otel_exporter_otlp_endpoint
                or settings.otel_exporter_otlp_traces_endpoint) and not (
        settings.otel_sdk_disabled or settings.otel_traces_exporter == "none")


def configure(settings: Settings) -> None:
    """When `exporting`: the SDK with a batching OTLP exporter as this process's tracer
    provider (the exporter reads the rest of its OTEL_EXPORTER_OTLP_* settings itself)."""
    global _exporting
    _exporting = exporting(settings)
    if not _exporting:
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if settings.otel_exporter_otlp_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    named = {} if settings.otel_service_name else {"service.name": SERVICE_NAME}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def start_request(headers: Mapping[str, str], name: str) -> tuple | None:
    """The request's server span, made current, its parent the caller's `traceparent`;
    None when there is nothing to trace (no export and no `traceparent`)."""
    if not _exporting and "traceparent" not in headers:
        return None
    parent = propagate.extract(headers)
    span = tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
    return span, context.attach(trace.set_span_in_context(span, parent))


def finish_request(started: tuple | None, status: int) -> None:
    """End what start_request began."""
    if started is None:
        return
    span, token = started
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()
    context.detach(token)


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside any trace."""
    span_context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else None


def inject(headers: dict) -> dict:
    """`headers` with the current span as `traceparent` (and `tracestate`)."""
    propagate.inject(headers)
    return headers


def span(name: str, **attributes):
    """A child span of the current one while exporting; off, nothing (the parent's
    context is what a no-op child would carry anyway)."""
    if not _exporting:
        return nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)


def carried(function: Callable) -> Callable:
    """`function` to run in another thread, inside the trace it is handed over in."""
    handed_over = context.get_current()

    def run(*args, **kwargs):
        token = context.attach(handed_over)
        try:
            return function(*args, **kwargs)
        finally:
            context.detach(token)

    return run
