"""The prediction path: reading an upload, admission and quotas, routing to a version,
TorchServe, the answer, readiness."""
