#!/usr/bin/env python3
"""Compare two registered runs, as `regress-action compare` does.

    python scripts/run_regression_test.py --baseline-run-id 1 --candidate-run-id 2 --dataset lm_tiny

Takes every `regress-action compare` flag (see --help); prints the JSON report on stdout.
"""

from __future__ import annotations

import sys

from regress_action.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["compare", *sys.argv[1:]]))
