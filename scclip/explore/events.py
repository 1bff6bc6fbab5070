"""Counts of the app's expensive events (model loads, embeddings, UMAPs, cache hits), for tests and debugging.

Each :func:`record` adds one to :data:`COUNTS` (this process) and, when ``$SCCLIP_EVENT_LOG`` names a file,
appends one line ``EVENT<TAB>KEY<TAB>PID`` to it: the load test counts the lines of a running server to prove
that shared models and caches are loaded once, not once per session.
"""

from __future__ import annotations

import os
import threading
from collections import Counter

#: Environment variable naming a file that receives one line per recorded event (off when unset).
EVENT_LOG_ENV = "SCCLIP_EVENT_LOG"
COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()


def record(event: str, key: str = "") -> None:
    """Count ``event`` (e.g. ``"model_load"``) for ``key``, and log it to ``$SCCLIP_EVENT_LOG`` if set."""
    with _LOCK:
        COUNTS[event] += 1
        path = os.environ.get(EVENT_LOG_ENV)
        if path:
            try:
                with open(path, "a") as fh:
                    fh.write(f"{event}\t{key}\t{os.getpid()}\n")
            except OSError:
                pass  # a debugging aid never breaks the app
