"""The HTTP adapters: Flask blueprints, error rendering, the API docs. The only package
that loads Flask (with gateway.app)."""
