"""Server-layer startup errors (not client-visible; clients see kvstore.errors).

Owns: the exceptions the `kvstore` command turns into one line on stderr.
"""

from __future__ import annotations

from kvstore.server.config import ConfigError


class DataDirError(Exception):
    """The data dir cannot be used (belongs elsewhere, corrupt, unreadable).

    The message is one line naming the directory; nothing was modified."""


class StartupError(Exception):
    """The node could not start (e.g. a listen address is in use)."""


__all__ = ["ConfigError", "DataDirError", "StartupError"]
