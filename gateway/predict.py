"""POST /predict: validate the upload, ask TorchServe (or a rollout's candidate), answer in
the old contract, log it."""

import contextlib
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import Blueprint, g, request
from werkzeug.exceptions import HTTPException

from gateway import limits, metrics
from gateway.auth import authenticate
from gateway.errors import ApiError, unavailable
from gateway.imagecheck import check_upload
from gateway.model_versions import check_version
from gateway.prediction_log import PredictionRow
from gateway.rollouts import Rollout, candidate_failed
from gateway.services import Services, services
from gateway.uploads import Upload, read_upload

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Classification:
    """TorchServe's answer for one image, in the old contract's terms."""

    class_id: int
    category_name: str
    score: int  # the top class's probability in integer percent
    model_name: str | None
    model_version: str | None
    top_k: list[dict]

    @classmethod
    def from_result(cls, result: dict) -> "Classification":
        top = result["predictions"][0]
        return cls(top["class_id"], top["category_name"], round(top["probability"] * 100),
                   result.get("model_name"), result.get("model_version"), result["predictions"])


@dataclass
class Attempt:
    """What one call to the model has established so far. Its log row is built from this
    once, when the call ends (`row`)."""

    request_id: str
    version: str | None  # asked of TorchServe; None: its default version
    arm: str  # pinned (the client chose the version), default, canary or shadow
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    username: str | None = None
    upload: Upload | None = None
    classification: Classification | None = None
    upstream_seconds: float | None = None
    rollout: Rollout | None = None
    agreement: tuple[bool, int] | None = None  # shadow: (same top-1, top-5 overlap)
    # Seconds per stage (gateway's and TorchServe handler's), for the Server-Timing header.
    stages: dict[str, float] = field(default_factory=dict)

    def row(self, status_code: int, error_detail: str | None, latency_ms: int) -> PredictionRow:
        upload, answer = self.upload, self.classification
        return PredictionRow(
            request_id=self.request_id,
            username=self.username,
            filename=upload.filename if upload else None,
            extension=upload.extension if upload else None,
            upload_sha256=hashlib.sha256(upload.data).hexdigest() if upload else None,
            upload_bytes=len(upload.data) if upload else None,
            created_at=self.created_at,
            success=status_code == 200,
            status_code=status_code,
            class_id=answer.class_id if answer else None,
            category_name=answer.category_name if answer else None,
            score=answer.score if answer else None,
            model_version=(answer.model_version if answer else (self.version or "")[:32] or None),
            latency_ms=latency_ms,
            error_detail=error_detail,
            arm=self.arm,
            rollout_id=self.rollout.id if self.rollout else None,
            shadow_top1_agree=self.agreement[0] if self.agreement else None,
            shadow_top5_overlap=self.agreement[1] if self.agreement else None,
        )


@contextlib.contextmanager
def timed(attempt: Attempt, stage: str):
    """The block's duration as the attempt's `stage`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        attempt.stages[stage] = time.perf_counter() - started


def classify_image(svc: Services, attempt: Attempt, upload: Upload) -> Classification:
    """Check one image and ask TorchServe; the attempt keeps what it learns."""
    settings = svc.settings
    attempt.upload = upload
    metrics.UPLOAD_BYTES.observe(len(upload.data))
    with timed(attempt, "check"):
        check_upload(upload.data, settings.max_upload_bytes, settings.max_image_pixels)
    started = time.perf_counter()
    try:
        result, handler_stages = svc.torchserve.predict(upload.data, attempt.version,
                                                        attempt.request_id)
    finally:
        attempt.upstream_seconds = attempt.stages["upstream"] = time.perf_counter() - started
        metrics.UPSTREAM_LATENCY.observe(attempt.upstream_seconds)
    attempt.stages.update(handler_stages)
    attempt.classification = Classification.from_result(result)
    metrics.PREDICTIONS.labels(attempt.classification.model_version,
                               str(attempt.classification.class_id)).inc()
    return attempt.classification


def classify_unpinned(svc: Services, attempt: Attempt, upload: Upload) -> Classification:
    """An image the client did not pin: the default version, or an active canary's
    candidate for its share of requests.

    A candidate's failure (5xx, or no longer registered) is not the client's: its row
    is written and counted against the guard, and the default answers instead. Shadow
    copies go to the background queue once the default has answered.
    """
    rollout = svc.rollouts.active() if svc.rollouts else None
    if rollout is None:
        return classify_image(svc, attempt, upload)
    attempt.rollout = rollout
    chosen = rollout.takes(attempt.username)
    if rollout.mode == "canary" and chosen:
        attempt.arm, attempt.version = "canary", rollout.version
        try:
            return classify_image(svc, attempt, upload)
        except ApiError as exc:
            if not candidate_failed(exc.status):
                raise  # the client's mistake: the default would refuse it too
            trial = dataclasses.replace(attempt, request_id=f"{attempt.request_id}-canary")
            try:
                _record(svc, trial, exc.status, exc.detail, attempt.upstream_seconds or 0)
            except Exception:  # the client's answer does not depend on the trial's row
                logger.exception("canary trial row failed for %s", attempt.request_id)
        attempt.arm, attempt.version, attempt.upstream_seconds = "default", None, None
    answer = classify_image(svc, attempt, upload)
    if rollout.mode == "shadow" and chosen:
        svc.shadow.submit(_shadow_copy, svc, rollout, upload, answer, attempt.request_id,
                          attempt.username)
    return answer


def _shadow_copy(svc: Services, rollout: Rollout, upload: Upload, answer: Classification,
                 request_id: str, username: str | None) -> None:
    """In a shadow worker: the candidate's answer to a copy, compared with the default's.
    Its outcome, failures included, is its own log row; the client never sees it."""
    with contextlib.suppress(Exception), \
            logged_prediction(svc, f"{request_id}-shadow", rollout.version, "shadow") as copy:
        copy.username, copy.rollout = username, rollout
        candidate = classify_image(svc, copy, upload)
        same = candidate.class_id == answer.class_id
        copy.agreement = (same, len({p["class_id"] for p in candidate.top_k[:5]}
                                    & {p["class_id"] for p in answer.top_k[:5]}))
        metrics.SHADOW_COMPARISONS.labels(rollout.version, "agree" if same else "differ").inc()


def _record(svc: Services, attempt: Attempt, status: int, detail: str | None,
            seconds: float) -> None:
    """Write the attempt's row; for a rollout's arm also its metrics and a guard review."""
    if attempt.rollout is not None and attempt.arm != "pinned":
        version = attempt.version or (attempt.classification.model_version
                                      if attempt.classification else "default")
        metrics.ROLLOUT_REQUESTS.labels(attempt.arm, version,
                                        "failed" if candidate_failed(status) else "ok").inc()
        metrics.ROLLOUT_LATENCY.labels(attempt.arm, version).observe(seconds)
    if svc.prediction_log is None:
        return
    svc.prediction_log.record(attempt.row(status, detail, round(seconds * 1000)))
    if attempt.arm in ("canary", "shadow") and attempt.rollout is not None:
        svc.rollouts.review(attempt.rollout)


def authorize_prediction():
    """The caller, within their prediction quota (OWASP API4), or ApiError 401/429."""
    user = authenticate()
    limits.check_quota(user.predict_rate_limit or services().settings.predict_rate_limit,
                       f"predict:{user.username}", "prediction")
    return user


@contextlib.contextmanager
def logged_prediction(svc: Services, request_id: str, version: str | None,
                      arm: str | None = None):
    """The Attempt of one image; its prediction-log row is written when the block ends,
    whatever the outcome.

    The row is written before the answer; if that fails the client must not think it
    was kept, so the answer becomes 503.
    """
    attempt = Attempt(request_id, version, arm or ("pinned" if version else "default"))
    started = time.perf_counter()
    status, detail = 200, None
    try:
        yield attempt
    except ApiError as exc:
        status, detail = exc.status, exc.detail
        raise
    except HTTPException as exc:
        status, detail = exc.code, exc.description
        raise
    except Exception as exc:
        status, detail = 500, f"internal error: {exc!r}"
        raise
    finally:
        try:
            with timed(attempt, "log"):
                _record(svc, attempt, status, detail, time.perf_counter() - started)
        except Exception as exc:
            logger.exception("prediction log write failed for %s", request_id)
            raise unavailable("prediction log is unavailable, try again") from exc


bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    svc = services()
    version = request.args.get("model_version")
    with logged_prediction(svc, g.request_id, version) as attempt:
        g.stages = attempt.stages
        with timed(attempt, "auth"):
            user = authorize_prediction()
        attempt.username = user.username
        if version is not None:
            check_version(version)
        with svc.admission.slot():
            with timed(attempt, "read"):
                upload = read_upload(request.environ["wsgi.input"], request.content_type,
                                     request.content_length, svc.settings.max_upload_bytes)
            try:
                answer = (classify_image(svc, attempt, upload) if version is not None
                          else classify_unpinned(svc, attempt, upload))
            finally:
                g.upstream_seconds = attempt.upstream_seconds
        g.model_version = answer.model_version
        return {
            "username": user.username,
            "filename": upload.filename,
            "extension": upload.extension,
            "date": attempt.created_at.isoformat(),
            "class_id": answer.class_id,
            "category_name": answer.category_name,
            "score": answer.score,
            "success": True,
            "model_name": answer.model_name,
            "model_version": answer.model_version,
            "top_k": answer.top_k,
        }
