"""``python -m redis_middleware``: the operators' command line (see ``cli``)."""

from __future__ import annotations

from .cli import main

raise SystemExit(main())
