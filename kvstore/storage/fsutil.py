"""File-system durability helpers shared by the data dir, backup and restore code.

Owns: making a rename or a new file's directory entry durable.
Never: writes file contents.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
