"""The WSGI app that gateway/serve.py serves: settings come from the environment."""

from gateway.app import create_app

app = create_app()
