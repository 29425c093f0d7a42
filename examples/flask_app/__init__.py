"""The Flask example: the same shop as the FastAPI one, on WSGI (no WebSocket)."""
