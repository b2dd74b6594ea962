"""WSGI middleware: what a request's body still holds once its answer is out is read and
dropped, so that the client's keep-alive connection stays usable.

The gateway answers many calls before reading their upload (a bad token, a used-up
quota, a shed call). granian closes a connection whose request body was left unread, and
a close over unread bytes resets it under the client, which then loses the answer
(ProtocolError in `make bench-overload`'s impolite crowds); gunicorn read the rest itself.
"""

from collections.abc import Callable, Iterable

from werkzeug.wsgi import ClosingIterator

CHUNK_BYTES = 64 * 1024


class DrainUnreadBody:
    def __init__(self, app: Callable, limit: int):
        """`limit`: the most bytes read after an answer, the largest upload accepted (a
        larger body left unread may still reset: reading a pushed archive's gigabyte for
        a refusal would hand anyone a thread)."""
        self.app, self.limit = app, limit

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        stream = environ["wsgi.input"]

        def drain() -> None:
            left = self.limit
            while left > 0 and (chunk := stream.read(min(CHUNK_BYTES, left))):
                left -= len(chunk)

        return ClosingIterator(self.app(environ, start_response), drain)
