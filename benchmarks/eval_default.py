"""Evaluate a geot2e model on held-out data and print the tables of docs/evaluation.md.

The protocol is :mod:`geot2e.eval.protocol` (what ``geot2e eval`` runs); this script runs it
from a source checkout without installing the package. ``--help`` lists its options.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from geot2e.eval.protocol import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
