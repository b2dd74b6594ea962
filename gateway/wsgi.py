"""gunicorn entry point: settings come from the environment."""

from gateway.app import create_app

app = create_app()
