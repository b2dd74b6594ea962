"""The prediction pipeline: what happens to a caller's image(s) between the HTTP adapters
(POST /predict, POST /v2/.../infer) and TorchServe, in this order:

1. the caller's quota (429), then a slot among the predictions in flight (503);
2. the body is read (the adapter's reader: 413, 415, 400, 422);
3. the route: the pinned version, or for unpinned calls the default, an active
   canary's candidate for its share, and a shadow copy for its share;
4. each image checked and sent to TorchServe (several together, so TorchServe
   batches them); a canary candidate's failure (5xx, or no longer registered) is
   answered by the default instead;
5. one prediction-log row per image (or one for a call refused before its images
   were read), written before the answer, in the database or while it is down in the
   outbox (gateway.prediction_log.writer): if it cannot be written the answer is 503 (a call shed
   by admission has its row written behind instead: WriteBehind); then the rollout
   guard's review.

The route reads the control snapshot (gateway.models.control_snapshot), never the database.

Plain Python, no Flask: it returns an immutable Outcome that the adapters render.
"""

import hashlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Mapping, Protocol

from limits.errors import StorageError
from sqlalchemy.exc import SQLAlchemyError

from core import tracing
from core.errors import ApiError, rate_limit_storage_down, unavailable
from core.settings import Settings
from core.torchserve_client import Answer, TorchServeClient
from gateway import metrics
from gateway.models.control_snapshot import ControlSnapshot
from gateway.models.rollouts.guard import candidate_failed
from gateway.models.rollouts.state import Rollout
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import check_version
from gateway.prediction_log.privacy import LogPrivacy
from gateway.prediction_log.store import PredictionRow, WriteBehind
from gateway.prediction_log.writer import LogWriter
from gateway.predictions.admission import Admission, Shed
from gateway.predictions.imagecheck import check_upload
from gateway.predictions.quota import Quota
from gateway.predictions.shadow import ShadowQueue
from gateway.predictions.uploads import Upload

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """A handler's answer for one image, in the old contract's terms, and as it came."""

    class_id: int | None  # None from a handler that does not number its classes
    category_name: str | None
    score: int | None  # the top class's probability in integer percent
    model_name: str | None
    model_version: str | None
    top_k: tuple[dict, ...]
    answer: Answer  # the handler's own answer, passed through by /torchserve

    @classmethod
    def from_answer(cls, answer: Answer, model: str, version: str | None) -> "Classification":
        """Ours ({"predictions": [...], "model_version"}) or TorchServe's built-in
        image_classifier's ({label: probability, ...}); another handler's answer has no
        class, and is still passed through."""
        result = answer.result
        if isinstance(result, dict) and "predictions" in result:
            top = result["predictions"][0]
            return cls(top["class_id"], top["category_name"], round(top["probability"] * 100),
                       result.get("model_name"), result.get("model_version"),
                       tuple(result["predictions"]), answer)
        scores = result if isinstance(result, dict) else {}
        ranked = sorted(((label, p) for label, p in scores.items()
                         if isinstance(p, (int, float)) and not isinstance(p, bool)),
                        key=lambda item: -item[1])
        label, probability = ranked[0] if ranked else (None, None)
        return cls(None, label, None if probability is None else round(probability * 100),
                   model, version,
                   tuple({"category_name": k, "probability": p} for k, p in ranked), answer)


class Payload(Protocol):
    """What an adapter's reader returns: its protocol's request, with the images in it."""

    uploads: tuple[Upload, ...]


@dataclass(frozen=True)
class PredictionRequest:
    request_id: str
    username: str
    own_quota: str | None  # the user's own quota, or None for the default
    model: str  # the model asked for (its name checked: declared or not)
    pinned: str | None  # the version the caller asked for, unchecked; None: unpinned
    read: Callable[[], Payload]  # reads the body; ApiError for one that is not acceptable
    numbered: bool = False  # rows are <request id>-<index> (/v2), not <request id>
    # The adapter renders classes (/predict, /v2): an answer without one is 502. False:
    # the handler's answer is passed through as it is (/torchserve).
    classes: bool = True
    trace_id: str | None = None  # the request's trace (core.tracing), for its rows


@dataclass(frozen=True)
class Route:
    model: str
    version: str | None  # asked of TorchServe; None: its default version
    arm: str  # pinned, default, canary (the candidate serves it)
    rollout: Rollout | None
    shadow: bool = False  # a copy goes to the rollout's candidate after the answer
    default: str | None = None  # the declared default when routed (for answers without one)


@dataclass(frozen=True)
class Outcome:
    """A call's end: status, its answers (one per image, on success) or its error, and
    what the access log and Server-Timing report."""

    status: int
    created_at: datetime
    payload: Payload | None  # None: refused before the body was read
    answers: tuple[Classification, ...]
    error: ApiError | None
    route: Route | None
    stages: Mapping[str, float]  # seconds per stage, in the order they ran
    upstream_seconds: float | None

    @property
    def model_version(self) -> str | None:
        return self.answers[0].model_version if self.answers else None


Result = Classification | ApiError  # one image's


@contextmanager
def timed(stages: dict, stage: str) -> Iterator[None]:
    """Add the block's duration to `stage`; the block is a span of that name."""
    started = time.perf_counter()
    with tracing.span(stage):
        try:
            yield
        finally:
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - started


def _first_error(results: Sequence[Result]) -> ApiError | None:
    return next((r for r in results if isinstance(r, ApiError)), None)


class PredictionPipeline:
    def __init__(self, settings: Settings, torchserve: TorchServeClient, admission: Admission,
                 quota: Quota, log: LogWriter | None, privacy: LogPrivacy,
                 rollouts: Callable[[str], RolloutStore], snapshot: ControlSnapshot,
                 shadow: ShadowQueue,
                 max_batch: int):
        self.settings, self.torchserve, self.admission = settings, torchserve, admission
        self.quota, self.log, self.privacy = quota, log, privacy
        self.shed_rows = WriteBehind(log.record, metrics.SHED_ROWS_LOST.inc) if log else None
        self.rollouts, self.snapshot, self.shadow = rollouts, snapshot, shadow
        # A call's images go to TorchServe together, so that it batches them.
        self._pool = ThreadPoolExecutor(max_workers=max_batch, thread_name_prefix="images")

    # ---- the call ---------------------------------------------------------------
    def predict(self, request: PredictionRequest) -> Outcome:
        created_at, started = datetime.now(timezone.utc), time.perf_counter()
        stages: dict[str, float] = {}
        payload, route, results = None, None, ()
        try:
            with timed(stages, "quota"):
                self.quota.check(request.username, request.own_quota)
            with self.admission.slot(request.username):
                with timed(stages, "read"):
                    payload = request.read()
                route = self._route(request)
                results = self._classify_all(payload.uploads, route, request, stages)
                if route.arm == "canary" and any(
                        isinstance(r, ApiError) and candidate_failed(r.status) for r in results):
                    with tracing.span("canary fallback", version=route.version):
                        self._record_trial(request, payload, route, results, created_at,
                                           started)
                        route = replace(route, version=None, arm="default")
                        results = self._classify_all(payload.uploads, route, request, stages)
            error = _first_error(results)
        except ApiError as exc:
            error = exc
        except StorageError as exc:
            logger.error("rate-limit storage unavailable: %s", exc)
            error = rate_limit_storage_down()
        except Exception:  # a defect: answered 500, and still logged
            logger.exception("prediction %s failed", request.request_id)
            error = ApiError(500, "internal server error")
        outcome = Outcome(error.status if error else 200, created_at, payload,
                          () if error else tuple(results), error, route, stages,
                          stages.get("upstream"))
        try:
            with timed(stages, "log"):
                self._record(request, outcome, results, time.perf_counter() - started)
        except Exception:
            logger.exception("prediction log write failed for %s", request.request_id)
            metrics.PREDICTION_LOG_FAILURES.inc()
            outcome = replace(outcome, status=503, answers=(),
                              error=unavailable("prediction log is unavailable, try again"))
        else:
            if outcome.answers and route.shadow:
                self.shadow.submit(tracing.carried(self._shadow_copy), request, payload,
                                   route.rollout, outcome.answers)
        return replace(outcome, stages=MappingProxyType(dict(stages)))

    def _route(self, request: PredictionRequest) -> Route:
        """Never to a version that no live replica could load (a pinned call for one is
        503; a rollout's share of it goes to the default)."""
        state = self.snapshot.current().model(request.model)
        if request.pinned is not None:
            version = check_version(request.pinned)
            if state.cannot_load(version):
                raise unavailable(f"model {state.name} version {version} cannot load "
                                  "on any live replica", retry_after=60)
            return Route(state.name, version, "pinned", None)
        rollout, default = state.rollout, state.default_version
        if rollout is None or state.cannot_load(rollout.version):
            return Route(state.name, None, "default", None, default=default)
        chosen = rollout.in_candidate_share(request.username, random.random())
        if rollout.mode == "canary" and chosen:
            return Route(state.name, rollout.version, "canary", rollout)
        return Route(state.name, None, "default", rollout,
                     shadow=rollout.mode == "shadow" and chosen, default=default)

    # ---- TorchServe -------------------------------------------------------------
    def _classify_all(self, uploads: Sequence[Upload], route: Route, request: PredictionRequest,
                      stages: dict) -> tuple[Result, ...]:
        """Each image's classification or error, in order. One image adds its check,
        upstream and handler times to `stages`; several add their wall time as upstream."""
        ids = self._row_ids(request, len(uploads))
        if len(uploads) == 1:
            return (self._classify(uploads[0], route, ids[0], stages, request.classes),)
        with timed(stages, "upstream"):
            classify = tracing.carried(self._classify)
            return tuple(self._pool.map(
                lambda upload, row_id: classify(upload, route, row_id, {}, request.classes),
                uploads, ids))

    def _classify(self, upload: Upload, route: Route, request_id: str, stages: dict,
                  classes: bool) -> Result:
        """One image: its header checked, then TorchServe's answer."""
        settings = self.settings
        metrics.UPLOAD_BYTES.observe(len(upload.data))
        try:
            with timed(stages, "check"):
                check_upload(upload.data, settings.max_upload_bytes, settings.max_image_pixels)
        except ApiError as exc:
            return exc
        call: dict[str, float] = {}
        try:
            with timed(call, "upstream"):
                handled = self.torchserve.predict(upload.data, route.version, request_id,
                                                  route.model)
        except ApiError as exc:
            return exc
        finally:  # accounting only: the call's time, answered or not
            metrics.UPSTREAM_LATENCY.observe(call["upstream"])
            stages["upstream"] = stages.get("upstream", 0.0) + call["upstream"]
        stages.update(handled.stages)
        answer = Classification.from_answer(handled, route.model, route.version or route.default)
        if classes and answer.class_id is None:
            return ApiError(502, f"model {route.model} answered no class: serve it through "
                                 "/torchserve/predictions, which passes its answer through")
        metrics.PREDICTIONS.labels(answer.model_version, str(answer.class_id)).inc()
        return answer

    # ---- shadow copies ----------------------------------------------------------
    def _shadow_copy(self, request: PredictionRequest, payload: Payload, rollout: Rollout,
                     answers: tuple[Classification, ...]) -> None:
        """In a shadow worker: the candidate's answers to a copy, compared with the
        default's; its rows, failures included, are its own. Errors reach the queue's
        log."""
        with tracing.span("shadow copy", version=rollout.version):
            self._shadow(request, payload, rollout, answers)

    def _shadow(self, request: PredictionRequest, payload: Payload, rollout: Rollout,
                answers: tuple[Classification, ...]) -> None:
        started = time.perf_counter()
        created_at = datetime.now(timezone.utc)
        route = Route(rollout.model_name, rollout.version, "shadow", rollout)
        copy = replace(request, request_id=f"{request.request_id}-shadow")
        results = self._classify_all(payload.uploads, route, copy, {})
        agreements = []
        for result, answer in zip(results, answers):
            if isinstance(result, ApiError):
                agreements.append(None)
                continue
            same = result.class_id == answer.class_id
            overlap = len({p["class_id"] for p in result.top_k[:5]}
                          & {p["class_id"] for p in answer.top_k[:5]})
            agreements.append((same, overlap))
            metrics.SHADOW_COMPARISONS.labels(rollout.version, "agree" if same else "differ").inc()
        error = _first_error(results)
        outcome = Outcome(error.status if error else 200, created_at, payload,
                          () if error else results, error, route, {}, None)
        self._record(copy, outcome, results, time.perf_counter() - started, agreements)

    # ---- the log --------------------------------------------------------------------
    @staticmethod
    def _row_ids(request: PredictionRequest, count: int) -> list[str]:
        if request.numbered:
            return [f"{request.request_id}-{i}" for i in range(count)]
        return [request.request_id] * count

    def _record_trial(self, request: PredictionRequest, payload: Payload, route: Route,
                      results: Sequence[Result], created_at: datetime, started: float) -> None:
        """The candidate's failed try, before the default answers: its rows (as
        <request id>-canary) count against the guard; the client's answer does not
        depend on them."""
        trial = replace(request, request_id=f"{request.request_id}-canary")
        error = _first_error(results)
        outcome = Outcome(error.status, created_at, payload, (), error, route, {}, None)
        try:
            self._record(trial, outcome, results, time.perf_counter() - started)
        except Exception:
            logger.exception("canary trial rows failed for %s", request.request_id)

    def _record(self, request: PredictionRequest, outcome: Outcome, results: Sequence[Result],
                seconds: float, agreements: Sequence[tuple[bool, int] | None] = ()) -> None:
        """The call's rows, one per image (one for a call refused before its images);
        during a rollout also its metrics and, for the candidate's arm, a guard review."""
        route = outcome.route
        uploads = outcome.payload.uploads if outcome.payload else ()
        if route is not None and route.rollout is not None and route.arm != "pinned":
            version = route.version or outcome.model_version or "default"
            metrics.ROLLOUT_REQUESTS.labels(
                route.arm, version, "failed" if candidate_failed(outcome.status) else "ok").inc()
            metrics.ROLLOUT_LATENCY.labels(route.arm, version).observe(seconds)
        if self.log is None:
            return
        ids = self._row_ids(request, len(uploads)) if uploads else [request.request_id]
        rows = [self._row(request_id, request, outcome, upload, result, agreement, seconds)
                for request_id, upload, result, agreement in zip(
                    ids, uploads or [None], results or [outcome.error] * len(ids),
                    agreements or [None] * len(ids))]
        if isinstance(outcome.error, Shed):
            self.shed_rows.put(*rows)
        else:
            self.log.record(*rows)
        if route is not None and route.rollout is not None and route.arm in ("canary", "shadow"):
            self._review(route.rollout)

    def _review(self, rollout: Rollout) -> None:
        """The guard's review of the candidate's newest rows; none while the database is
        down (its rows are in the outbox: the candidate keeps its share until then)."""
        try:
            reason = self.rollouts(rollout.model_name).review(rollout)
        except SQLAlchemyError as exc:
            logger.warning("rollout guard skipped, database unavailable: %s", exc)
            return
        if reason:
            metrics.ROLLBACKS.labels(rollout.version, reason.split(" ", 1)[0]).inc()
            self.snapshot.refresh()  # this process routes to the default at once

    def _row(self, request_id: str, request: PredictionRequest, outcome: Outcome,
             upload: Upload | None, result: Result | None,
             agreement: tuple[bool, int] | None, seconds: float) -> PredictionRow:
        answer = result if isinstance(result, Classification) else None
        error = result if isinstance(result, ApiError) else outcome.error
        status = 200 if answer else error.status
        route = outcome.route
        asked = (route.version if route else None) or (request.pinned or "")[:32] or None
        filename, extension = (self.privacy.stored_file(upload.filename, upload.extension)
                               if upload else (None, None))
        return PredictionRow(
            request_id=request_id,
            username=self.privacy.stored_user(request.username),
            filename=filename,
            extension=extension,
            upload_sha256=hashlib.sha256(upload.data).hexdigest() if upload else None,
            upload_bytes=len(upload.data) if upload else None,
            created_at=outcome.created_at,
            success=status == 200,
            status_code=status,
            class_id=answer.class_id if answer else None,
            category_name=answer.category_name if answer else None,
            score=answer.score if answer else None,
            model_name=request.model,
            model_version=answer.model_version if answer else asked,
            latency_ms=round(seconds * 1000),
            error_detail=None if answer else error.detail,
            arm=route.arm if route else ("pinned" if request.pinned else "default"),
            rollout_id=route.rollout.id if route and route.rollout else None,
            shadow_top1_agree=agreement[0] if agreement else None,
            shadow_top5_overlap=agreement[1] if agreement else None,
            trace_id=request.trace_id,
        )
