"""regress-action: catch ML model regressions before they ship.

`import regress_action` stays light (no torch): `compare_models` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "compare_models"]

if TYPE_CHECKING:
    from .api import compare_models


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attribute: the API module imports torch, the package must not.
    if name == "compare_models":
        from .api import compare_models

        return compare_models
    raise AttributeError(f"module 'regress_action' has no attribute {name!r}")
