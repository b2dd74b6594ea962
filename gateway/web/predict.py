"""POST /predict: the prediction pipeline's adapter for the old contract (a multipart
`file` in, the JSON answer out), on MODEL_NAME or the model `?model=` names."""

import time

from flask import Blueprint, g, jsonify, request

from core import tracing
from gateway.predictions.pipeline import PredictionRequest
from gateway.predictions.uploads import read_form
from gateway.web import observability
from gateway.web.auth import authenticate
from gateway.web.extension import services
from gateway.web.responses import detail_error

bp = Blueprint("predict", __name__)


@bp.post("/predict")
def predict():
    svc = services()
    started = time.perf_counter()
    model = request.args.get("model", svc.settings.model_name)
    user = authenticate("predict", model)
    authenticated = time.perf_counter() - started
    outcome = svc.pipeline.predict(PredictionRequest(
        request_id=g.request_id, trace_id=tracing.trace_id(), username=user.username,
        own_quota=user.predict_rate_limit, model=model,
        pinned=request.args.get("model_version"),
        read=lambda: read_form(request.environ["wsgi.input"], request.content_type,
                               request.content_length, svc.settings.max_upload_bytes)))
    if outcome.error:
        response = detail_error(outcome.error)
    else:
        [upload], [answer] = outcome.payload.uploads, outcome.answers
        response = jsonify({
            "username": user.username,
            "filename": upload.filename,
            "extension": upload.extension,
            "date": outcome.created_at.isoformat(),
            "class_id": answer.class_id,
            "category_name": answer.category_name,
            "score": answer.score,
            "success": True,
            "model_name": answer.model_name,
            "model_version": answer.model_version,
            "top_k": answer.top_k,
        })
    return observability.report(response, {"auth": authenticated, **outcome.stages},
                                outcome.model_version, outcome.upstream_seconds)
