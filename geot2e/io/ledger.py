"""Tile-completion ledger of a Zarr store, to resume an interrupted run.

``store/.geot2e_done/`` is an empty Zarr subgroup (so Zarr tools accept it) holding one
empty file per finished tile. A marker is created only after the tile's region write
returned, and creating an empty file is atomic: a run killed at any point never records
an unfinished tile as done. (Markers survive a killed process; surviving a power loss
would also need the written chunks to be flushed to disk, which this does not do.)
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from geot2e.errors import OutputPathError, ParameterError

__all__ = ["LEDGER_DIR", "tile_key", "mark_done", "done_keys", "ensure_ledger"]

#: Subgroup of the store holding the tile-completion ledger.
LEDGER_DIR = ".geot2e_done"
_LEDGER_META = {
    "zarr_format": 3,
    "node_type": "group",
    "attributes": {"geot2e_ledger": "one empty file per tile whose region write completed"},
}
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def tile_key(key: Any) -> str:
    """Normalise a ledger key: ``(3, 7)`` -> ``"3_7"``; strings are checked and kept."""
    if isinstance(key, (tuple, list)):
        if not key or not all(isinstance(k, (int, np.integer)) and k >= 0 for k in key):
            raise ParameterError(f"a tuple ledger key must hold non-negative ints, got {key!r}.")
        return "_".join(str(int(k)) for k in key)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        return str(int(key))
    if isinstance(key, str) and _KEY_RE.match(key) and key != "zarr.json":
        return key
    raise ParameterError(
        f"ledger key {key!r} is not valid; use a tuple of ints or a string of letters, "
        "digits, '.', '_' and '-' (not starting with '.')."
    )


def ensure_ledger(store: Path) -> Path:
    """Create the ledger subgroup (a Zarr group, so Zarr tools accept it) if missing."""
    ledger = store / LEDGER_DIR
    meta = ledger / "zarr.json"
    if not meta.is_file():
        ledger.mkdir(exist_ok=True)
        tmp = ledger / f".zarr.json.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(_LEDGER_META), encoding="utf-8")
        os.replace(tmp, meta)
    return ledger


def mark_done(store: str | os.PathLike, key: Any) -> None:
    """Record that tile ``key`` is fully written (call only after its region write).

    One empty file per key under ``store/.geot2e_done/``: creating it is atomic, so a
    run killed at any point never records a tile whose write had not returned.
    """
    p = Path(os.fspath(store)).expanduser()
    if not (p / "zarr.json").is_file():
        raise OutputPathError(
            f"{p} is not a Zarr v3 store (no zarr.json); create it with create_zarr_like first."
        )
    ledger = ensure_ledger(p)
    marker = ledger / tile_key(key)
    fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)


def done_keys(store: str | os.PathLike) -> set[str]:
    """Keys recorded by :func:`mark_done` (normalised, see :func:`tile_key`)."""
    p = Path(os.fspath(store)).expanduser()
    ledger = p / LEDGER_DIR
    if not ledger.is_dir():
        return set()
    return {
        e.name
        for e in os.scandir(ledger)
        if e.is_file() and e.name != "zarr.json" and _KEY_RE.match(e.name)
    }
