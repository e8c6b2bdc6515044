"""The error tree of regress-action, each class with its process exit code.

Imports nothing but the standard library. A regression is a *result*, never an error.

    RegressActionError (exit 3: an internal bug unless a subclass says otherwise)
    └── UserError (exit 2: bad input or configuration; the message names the input and the fix)
        ├── ConfigError            invalid option / input value (threshold, metric name, ...)
        ├── DataError              missing, empty or malformed eval data; unknown dataset
        ├── ModelLoadError         missing / corrupt / unsafe checkpoint, bad factory
        │   └── ChecksumMismatchError
        ├── ModelOutputError       a model whose output does not fit the task
        ├── StoreError             database unreachable, unknown run / comparison id, newer schema
        └── GitHubError            unusable GitHub context (missing repository, bad event payload)
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class RegressActionError(Exception):
    """Root of every error raised on purpose by regress-action."""

    exit_code = EXIT_INTERNAL


class UserError(RegressActionError):
    """Something the user can fix: bad input, configuration or environment."""

    exit_code = EXIT_USAGE


class ConfigError(UserError):
    """An option or action input has an invalid value."""


class DataError(UserError):
    """The eval set is missing, empty, malformed, or an unknown built-in name."""


class ModelLoadError(UserError):
    """A checkpoint could not be loaded (missing, corrupt, unsafe, bad factory)."""


class ChecksumMismatchError(ModelLoadError):
    """A checkpoint's sha256 differs from the one recorded when it was registered."""


class ModelOutputError(UserError):
    """A model produced output whose shape does not fit the task."""


class StoreError(UserError):
    """The ExperimentDB is unreachable, too new, or has no such run / comparison."""


class GitHubError(UserError):
    """The GitHub context (event payload, repository, token) cannot be used."""


class FollowerDone(Exception):
    """Under torchrun: raised on ranks > 0 once their records are sent to rank 0, which
    finishes the comparison. Not an error: the command returns, and every rank then exits with
    rank 0's code."""
