"""Flask-free code the gateway and the model agent share: settings, the served model's
name, the catalog of model versions, the database, the TorchServe client, tracing."""
