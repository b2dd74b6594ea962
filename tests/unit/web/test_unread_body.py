"""The middleware that reads what an answered request's body still holds."""

import io

from gateway.web.unread_body import DrainUnreadBody


def refuse(environ, start_response):
    start_response("401 UNAUTHORIZED", [("Content-Type", "application/json")])
    return [b'{"detail": "no"}']


def serve(app, body: bytes):
    stream = io.BytesIO(body)
    answer = app({"wsgi.input": stream}, lambda status, headers: None)
    assert b"".join(answer) == b'{"detail": "no"}'
    assert stream.tell() == 0  # nothing read before the answer is out
    answer.close()
    return stream.tell()


def test_an_unread_body_is_read_once_the_answer_is_out():
    assert serve(DrainUnreadBody(refuse, 1_000_000), b"x" * 200_000) == 200_000


def test_no_more_than_the_limit_is_read():
    assert serve(DrainUnreadBody(refuse, 100_000), b"x" * 300_000) == 100_000
