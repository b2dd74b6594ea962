"""Flask auth gateway in front of TorchServe; the app factory is gateway.app.create_app."""
