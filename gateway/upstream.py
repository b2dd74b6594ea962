"""TorchServe client: pooled HTTP, timeouts, and upstream failures mapped to ApiError."""

import requests
from requests.adapters import HTTPAdapter

from gateway.errors import ApiError, unavailable
from gateway.settings import Settings


class TorchServe:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.timeout = (settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.upstream_pool_size,
                              max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def _call(self, method: str, url: str, timeout=None, **kwargs) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.ConnectionError as exc:  # refused, reset, or connect timeout
            raise unavailable("model server is unavailable") from exc
        except requests.ReadTimeout as exc:
            raise ApiError(504, "model server did not answer in time") from exc
        except requests.RequestException as exc:
            raise ApiError(502, f"model server request failed: {exc}") from exc

    def predict(self, image: bytes, version: str | None, request_id: str) -> dict:
        """The handler's result for one image: predictions, model name and version."""
        name = self.settings.model_name
        path = f"/predictions/{name}" + (f"/{version}" if version else "")
        response = self._call(
            "POST", self.settings.torchserve_url + path, data=image,
            headers={"Content-Type": "application/octet-stream", "X-Request-ID": request_id},
        )
        body = _json(response)
        if response.status_code == 200 and "predictions" in body:
            return body
        if response.status_code == 422:
            raise ApiError(422, body.get("error") or "image could not be classified")
        if response.status_code == 404:
            what = f"model {name} version {version}" if version else f"model {name}"
            raise ApiError(404, f"{what} is not registered")
        if response.status_code in (500, 502, 503, 504, 507):
            raise unavailable(f"model server could not serve the request ({response.status_code})")
        raise ApiError(502, f"unexpected model server answer {response.status_code}")

    def management(self, method: str, path: str, **kwargs) -> requests.Response:
        return self._call(method, self.settings.torchserve_management_url + path, **kwargs)

    def describe(self, which: str = "") -> list[dict]:
        """Management API model description: the default version ("") or "all"."""
        path = f"/models/{self.settings.model_name}" + (f"/{which}" if which else "")
        response = self.management(
            "GET", path, timeout=(self.settings.upstream_connect_timeout, 5)
        )
        if response.status_code == 404:
            raise ApiError(404, f"model {self.settings.model_name} is not registered")
        if response.status_code != 200:
            raise unavailable(f"management API answered {response.status_code}")
        return _json(response, default=[])


def _json(response: requests.Response, default=None):
    try:
        return response.json()
    except ValueError:
        return {} if default is None else default
