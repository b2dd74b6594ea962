"""Query-string arguments (422 for a bad one) and streamed exports, as the prediction
log's and the model history's routes read and answer them."""

import itertools
import re
from collections.abc import Iterator
from datetime import datetime, timezone

from flask import Response, request

from core.errors import ApiError
from gateway.prediction_log.export import FORMATS

MAX_LIMIT = 100  # a page's rows
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def int_arg(name: str, default: int | None, low: int, high: int) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise ApiError(422, f"{name} must be an integer from {low} to {high}")
    return int(raw)


def time_arg(name: str, default: datetime) -> datetime:
    """An RFC 3339 date (midnight UTC) or date-time with its offset, in UTC."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (DATE.fullmatch(raw) or DATE_TIME.fullmatch(raw)):
        raise ApiError(422, f"{name} must be an RFC 3339 date or date-time, e.g. 2026-12-01 "
                            "or 2026-12-01T12:00:00Z")
    try:
        moment = datetime.fromisoformat(raw.upper().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"{name} is not a date that exists") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # an offset past year 1 or 9999: the nearest moment there is
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


def choice_arg(name: str, choices: tuple[str, ...]) -> str:
    raw = request.args.get(name, choices[0])
    if raw not in choices:
        raise ApiError(422, f"{name} must be one of {', '.join(choices)}")
    return raw


def export(records: Iterator[dict], columns: tuple[str, ...]) -> Response:
    """The records streamed in ?format= (ndjson or csv). The first is read now: a
    database outage is still a 503, not a broken stream."""
    media_type, encode = FORMATS[choice_arg("format", tuple(FORMATS))]
    first = list(itertools.islice(records, 1))
    return Response(encode(itertools.chain(first, records), columns), mimetype=media_type,
                    headers={"Cache-Control": "no-store"})
