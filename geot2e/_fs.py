"""Filesystem helpers shared by the layers (standard library only)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["atomic_folder"]


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Write a folder all or nothing: yields a temporary sibling (mode 755) to fill; on success it
    replaces ``path`` (an existing one is moved aside first and removed after), on any error it
    is removed and ``path`` is left as it was."""
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    try:
        yield tmp
        if dst.exists():
            old = dst.with_name(dst.name + ".old")
            os.replace(dst, old)
            os.replace(tmp, dst)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
