"""The TorchServe client: pooled HTTP, timeouts, and TorchServe's failures mapped to ApiError.

Built on urllib3 (the pool under `requests`) directly: less CPU per call than a
`requests.Session` (bench/HISTORY.md, "What each change did"), on a path every prediction takes.
"""

import contextlib
import functools
import json
import logging
from dataclasses import dataclass
from urllib.parse import urlencode

import urllib3
from urllib3.exceptions import (ConnectTimeoutError, HTTPError, NewConnectionError, ProtocolError,
                                ReadTimeoutError)

from core import tracing
from core.errors import ApiError, unavailable
from core.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """A handler's answer to one image: its JSON, and its bytes as TorchServe sent them."""

    result: dict | list
    body: bytes
    stages: dict[str, float]


class TorchServeClient:
    def __init__(self, settings: Settings):
        self.url, self.management_url = settings.torchserve_url, settings.torchserve_management_url
        self.model_name = settings.model_name
        self.connect_timeout = settings.upstream_connect_timeout
        self.timeout = urllib3.Timeout(connect=settings.upstream_connect_timeout,
                                       read=settings.upstream_read_timeout)
        # Straight to TorchServe: no retries (a prediction is not replayed behind the
        # client's back) and no proxy from the environment.
        self.pool = urllib3.PoolManager(num_pools=4, maxsize=settings.upstream_pool_size,
                                        retries=False)
        # The inference API's own pool, called with paths: every prediction skips the
        # PoolManager's per-call lookup (bench/HISTORY.md, "Session 18").
        self.inference = urllib3.connection_from_url(
            self.url, maxsize=settings.upstream_pool_size, retries=False)
        self.inference_prefix = (urllib3.util.parse_url(self.url).path or "").rstrip("/")

    def _request(self, method: str, url: str, timeout: urllib3.Timeout | None = None,
                 params: dict | None = None, pool: urllib3.connectionpool.HTTPConnectionPool
                 | urllib3.PoolManager | None = None, resend_dropped: bool = False,
                 **kwargs) -> urllib3.BaseHTTPResponse:
        """One HTTP call (`url` a path when `pool` is one host's); a transport failure is an
        ApiError 502/503/504. With `resend_dropped`, a call refused or dropped before any
        answer goes once more, on another connection: a balancer reloaded, or a replica went
        away, under a connection the pool held (never after a timeout)."""
        if params:
            url += "?" + urlencode(params)
        send = functools.partial((pool or self.pool).request, method, url,
                                 timeout=timeout or self.timeout, **kwargs)
        try:
            try:
                return send()
            except (NewConnectionError, ProtocolError) as exc:
                if not resend_dropped:
                    raise
                logger.warning("%s %s: %s; sending it once more", method, url, exc)
                return send()
        except ReadTimeoutError as exc:
            raise ApiError(504, "model server did not answer in time") from exc
        except (ConnectTimeoutError, ProtocolError) as exc:  # refused, reset, slow connect
            raise unavailable("model server is unavailable") from exc
        except HTTPError as exc:
            raise ApiError(502, f"model server request failed: {exc}") from exc

    def _call(self, method: str, url: str, **kwargs) -> tuple[int, object]:
        """(status, JSON body or {}) of one HTTP call."""
        response = self._request(method, url, **kwargs)
        return response.status, _json(response.data)

    def models(self) -> list[str]:
        """The names of the models this TorchServe serves (its management API's list)."""
        status, body = self.management("GET", "/models", params={"limit": 1000})
        if status != 200 or not isinstance(body, dict):
            raise unavailable(f"management API answered {status}")
        return [m["modelName"] for m in body.get("models", [])]

    def predict(self, image: bytes, version: str | None, request_id: str,
                model: str | None = None) -> Answer:
        """The handler's answer for one image to `model` (default: MODEL_NAME), with its
        stage times in seconds (its Server-Timing header: preprocess, inference,
        postprocess)."""
        name = model or self.model_name
        path = f"/predictions/{name}" + (f"/{version}" if version else "")
        response = self._request(
            "POST", self.inference_prefix + path, pool=self.inference, resend_dropped=True,
            body=image,
            headers=tracing.inject({"Content-Type": "application/octet-stream",
                                    "X-Request-ID": request_id}),
        )
        status, body = response.status, _json(response.data)
        if status == 200 and isinstance(body, (dict, list)) and body != {}:
            return Answer(body, response.data,
                          stage_seconds(response.headers.get("Server-Timing", "")))
        if status == 422:
            detail = body.get("error") if isinstance(body, dict) else None
            raise ApiError(422, detail or "image could not be classified")
        if status == 404:
            what = f"model {name} version {version}" if version else f"model {name}"
            raise ApiError(404, f"{what} is not registered")
        if status in (500, 502, 503, 504, 507):
            raise unavailable(f"model server could not serve the request ({status})")
        raise ApiError(502, f"unexpected model server answer {status}")

    def ping(self) -> None:
        """ApiError 503 unless the inference API (through whatever balances the replicas)
        answers its /ping."""
        response = self._request("GET", self.inference_prefix + "/ping", pool=self.inference)
        if response.status != 200:
            raise unavailable(f"model server is unavailable ({response.status})")

    def management(self, method: str, path: str, timeout: float = 5, **kwargs):
        """(status, JSON body) of a management API call."""
        return self._call(method, self.management_url + path,
                          timeout=urllib3.Timeout(connect=self.connect_timeout, read=timeout),
                          **kwargs)

    def describe(self, which: str = "", model: str | None = None) -> list[dict]:
        """The default version's description (""), a version's, or "all" versions', of
        `model` (default: MODEL_NAME)."""
        model = model or self.model_name
        path = f"/models/{model}" + (f"/{which}" if which else "")
        status, body = self.management("GET", path)
        if status == 404:
            raise ApiError(404, f"model {model} is not registered")
        if status != 200 or not isinstance(body, list):
            raise unavailable(f"management API answered {status}")
        return body


def stage_seconds(header: str) -> dict[str, float]:
    """{"inference": 0.0221, ...} from "inference;dur=22.1, ..."; malformed entries skipped."""
    stages = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        with contextlib.suppress(ValueError):
            stages[name] = float(duration) / 1000
    return stages


def _json(data: bytes):
    """The body as JSON, or {} when it is not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return {}
