"""TorchServe client: pooled HTTP, timeouts, and upstream failures mapped to ApiError."""

import requests
from requests.adapters import HTTPAdapter

from gateway.errors import ApiError, unavailable
from gateway.settings import Settings


class TorchServe:
    def __init__(self, url: str, management_url: str, model_name: str,
                 connect_timeout: float = 2.0, read_timeout: float = 35.0, pool_size: int = 8):
        self.url, self.management_url, self.model_name = url, management_url, model_name
        self.connect_timeout = connect_timeout
        self.timeout = (connect_timeout, read_timeout)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings: Settings) -> "TorchServe":
        return cls(settings.torchserve_url, settings.torchserve_management_url,
                   settings.model_name, settings.upstream_connect_timeout,
                   settings.upstream_read_timeout, settings.upstream_pool_size)

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
        name = self.model_name
        path = f"/predictions/{name}" + (f"/{version}" if version else "")
        response = self._call(
            "POST", self.url + path, data=image,
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

    def management(self, method: str, path: str, timeout: float = 5, **kwargs):
        """(status, JSON body) of a management API call."""
        response = self._call(method, self.management_url + path,
                              timeout=(self.connect_timeout, timeout), **kwargs)
        return response.status_code, _json(response)

    def describe(self, which: str = "") -> list[dict]:
        """The default version's description (""), a version's, or "all" versions'."""
        path = f"/models/{self.model_name}" + (f"/{which}" if which else "")
        status, body = self.management("GET", path)
        if status == 404:
            raise ApiError(404, f"model {self.model_name} is not registered")
        if status != 200 or not isinstance(body, list):
            raise unavailable(f"management API answered {status}")
        return body


def _json(response: requests.Response):
    """The body as JSON, or {} when it is not JSON."""
    try:
        return response.json()
    except ValueError:
        return {}
