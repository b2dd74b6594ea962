"""gunicorn entry point: settings come from the environment."""

from gateway import create_app

app = create_app()
