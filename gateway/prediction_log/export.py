"""The prediction log's export (GET /predictions/export): every row created in a time
range, oldest first, as NDJSON or CSV, streamed (the model history's export takes the
same formats).

Rows are read CHUNK_ROWS at a time by id (keyset, each chunk its own short read), so
memory stays flat however many rows go out and no read holds the table. An export
that broke off resumes with `after=<the last id received>`.
"""

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Engine

from core.database.engine import as_utc
from core.database.tables import predictions

CHUNK_ROWS = 1000
BLOCK_CHARS = 64 * 1024
COLUMNS = tuple(predictions.columns.keys())


def rows(engine: Engine, start: datetime, end: datetime, after: int) -> Iterator[dict]:
    """The rows created in [start, end) with an id above `after`, by id."""
    query = (select(predictions)
             .where(predictions.c.created_at >= start, predictions.c.created_at < end)
             .order_by(predictions.c.id).limit(CHUNK_ROWS))
    while True:
        with engine.connect() as connection:
            chunk = connection.execute(query.where(predictions.c.id > after)).all()
        for row in chunk:
            yield {**row._mapping, "created_at": as_utc(row.created_at).isoformat()}
        if len(chunk) < CHUNK_ROWS:
            return
        after = chunk[-1].id


def _blocks(texts: Iterable[str]) -> Iterator[bytes]:
    """The texts joined into blocks of about BLOCK_CHARS: few writes to the socket."""
    block, size = [], 0
    for text in texts:
        block.append(text)
        size += len(text)
        if size >= BLOCK_CHARS:
            yield "".join(block).encode()
            block, size = [], 0
    yield "".join(block).encode()


def ndjson(records: Iterable[dict], columns: tuple[str, ...]) -> Iterator[bytes]:
    """A JSON object per line (it names its own columns)."""
    return _blocks(json.dumps(record, separators=(",", ":")) + "\n" for record in records)


class _Lines(list):
    """csv's file: the writer writes each line in one call."""

    write = list.append


def csv_lines(records: Iterable[dict], columns: tuple[str, ...]) -> Iterator[bytes]:
    """A header of `columns`, then a line per record; NULL is an empty field."""
    lines = _Lines()
    writer = csv.DictWriter(lines, columns, lineterminator="\n")

    def texts():
        writer.writeheader()
        for record in records:
            yield from lines
            lines.clear()
            writer.writerow(record)
        yield from lines

    return _blocks(texts())


FORMATS = {"ndjson": ("application/x-ndjson", ndjson),
           "csv": ("text/csv; charset=utf-8", csv_lines)}
