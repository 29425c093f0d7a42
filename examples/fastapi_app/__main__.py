"""``python -m examples.fastapi_app``: serve the demo and print where to open it."""

from __future__ import annotations

import os

import uvicorn


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    print(f"redis-middleware FastAPI demo: open http://{host}:{port}/", flush=True)
    uvicorn.run("examples.fastapi_app.app:app", host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
