"""Output-path checks shared by the writers (run before anything is computed)."""
from __future__ import annotations

import os
from pathlib import Path

from geot2e.errors import OutputExistsError, OutputPathError

__all__ = ["check_output_path", "remove_quietly"]


def check_output_path(path: str | os.PathLike, *, overwrite: bool, kind: str = "file") -> Path:
    """Check that ``path`` can be written, and return it as an absolute :class:`Path`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file (``kind="file"``) or directory store (``kind="store"``).
    overwrite : bool
        Whether an existing destination may be replaced.
    kind : {"file", "store"}
        What the destination is.

    Raises
    ------
    OutputPathError
        The parent directory is missing or not writable, or the destination exists but
        is of the other kind (a directory where a file goes, or the reverse).
    OutputExistsError
        The destination exists and ``overwrite`` is False.
    """
    dest = Path(os.fspath(path)).expanduser().absolute()
    parent = dest.parent
    if not parent.is_dir():
        raise OutputPathError(
            f"the output directory {parent} does not exist; create it first "
            f"(e.g. Path({str(parent)!r}).mkdir(parents=True)) or choose another path."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"the output directory {parent} is not writable; choose a directory you can "
            "write to or change its permissions."
        )
    if dest.exists() or dest.is_symlink():
        if kind == "file" and dest.is_dir():
            raise OutputPathError(f"{dest} is a directory; give a file path for the output.")
        if kind == "store" and not dest.is_dir():
            raise OutputPathError(f"{dest} exists and is not a directory; choose another store path.")
        if not overwrite:
            raise OutputExistsError(
                f"{dest} already exists; pass overwrite=True to replace it or choose another path."
            )
        if kind == "file" and not os.access(dest, os.W_OK) and not os.access(parent, os.W_OK):
            raise OutputPathError(f"{dest} cannot be replaced; check its permissions.")
    return dest


def remove_quietly(path: Path) -> None:
    """Remove a file if it exists, ignoring errors."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - best effort cleanup
        pass
