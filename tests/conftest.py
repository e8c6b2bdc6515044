"""Shared pytest set-up: fixture plugins live in their own modules."""

from __future__ import annotations

pytest_plugins = ["tests.pg_server", "tests.gh_server"]
