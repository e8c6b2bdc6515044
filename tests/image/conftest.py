"""`make image-test` alone collects these tests (REGRESS_IMAGE_TEST=1): they build the action's
image with a Docker engine, which `make test` does not need."""

from __future__ import annotations

import os

if os.environ.get("REGRESS_IMAGE_TEST") != "1":
    collect_ignore_glob = ["test_*.py"]
