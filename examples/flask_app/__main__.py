"""``python -m examples.flask_app``: serve the demo and print where to open it."""

from __future__ import annotations

import os

from .app import app


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8001"))
    print(f"redis-middleware Flask demo: open http://{host}:{port}/", flush=True)
    app.run(host=host, port=port, threaded=True)


if __name__ == "__main__":
    main()
