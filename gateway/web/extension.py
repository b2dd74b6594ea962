"""`services()`, the one way a request reaches the app's Services."""

from flask import current_app

from gateway.services import Services

EXTENSION = "gateway"  # app.extensions key


def services() -> Services:
    """The current app's services (create_app puts them in app.extensions)."""
    return current_app.extensions[EXTENSION]
