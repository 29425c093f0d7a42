"""The FastAPI example: every redis-middleware component on a small shop."""
