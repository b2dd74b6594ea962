"""The load generator's HTTP calls: urllib3, one keep-alive connection per client thread,
each upload's multipart body encoded once.

The client shares the 2 cores with what it measures: `requests` with `files=` cost 1.23 ms
of client CPU per /predict here, this 0.65 ms (HISTORY.md, "What each change did"). The gateway receives
the same bytes either way.
"""

from urllib.parse import urlencode

import urllib3

TIMEOUT = urllib3.Timeout(connect=10, read=60)
# What a failed call counts as: refused, reset, timed out.
FAILURES = urllib3.exceptions.HTTPError


def new_pool() -> urllib3.PoolManager:
    """A client thread's own connection; no retries, so every failure is counted."""
    return urllib3.PoolManager(maxsize=1, retries=False, timeout=TIMEOUT)


def uploads(payloads: list[bytes]) -> list[tuple[bytes, str]]:
    """(multipart body, its Content-Type) of a /predict upload of each payload."""
    return [urllib3.encode_multipart_formdata({"file": ("x.jpg", p)}) for p in payloads]


def predict(pool: urllib3.PoolManager, url: str, token: str, upload: tuple[bytes, str],
            version: str | None = None) -> urllib3.BaseHTTPResponse:
    """POST /predict of one upload, pinned to `version` if given."""
    body, content_type = upload
    query = "?" + urlencode({"model_version": version}) if version else ""
    return pool.request("POST", f"{url}/predict{query}", body=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": content_type})


def direct(pool: urllib3.PoolManager, torchserve_url: str, payload: bytes,
           token: str | None = None) -> urllib3.BaseHTTPResponse:
    """POST of the raw image to TorchServe's inference API: TorchServe's own, or the
    gateway's (`<gateway>/torchserve`, with a token) as a TorchServe client sends it."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return pool.request("POST", f"{torchserve_url}/predictions/classifier", body=payload,
                        headers=headers)
