"""The per-example records file (`--records-path`): every example of a comparison, one row each,
as a columnar file beside the bounded JSON report.

Columns: `example_id` (the engine's index into the eval set), `key` (the example as the user
finds it in their data: a file path, `line 12`, `row 7`, ...), `group` when examples are
resampled in clusters, then each record column of each side as `baseline_<column>` and
`candidate_<column>` (a classifier's `prediction`, `correct`, `loss`, ...; an LM's `nll_sum`,
`tokens`, `correct_tokens`, `bytes`), and for an LM the per-example mean token loss
(`baseline_loss`, `candidate_loss` = nll_sum / tokens, NaN without tokens) and `loss_delta`.

Two formats, chosen by the file's suffix: `.parquet` (pyarrow, the `arrow` extra: read it with
pandas, polars or DuckDB) and `.npz` (numpy alone; the keys are a unicode array). Imports numpy;
pyarrow only when a Parquet file is written.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import ConfigError
from .records import PairedRecords

SUFFIXES = (".parquet", ".npz")
Table = dict[str, NDArray[Any]]


def check_records_path(path: Path | None, flag: str = "--records-path") -> None:
    """Fail before any work on a suffix this module does not write, or on Parquet without
    pyarrow installed."""
    if path is None:
        return
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{flag} {str(path)!r}: the records file is written as .parquet or .npz, not "
            f"{suffix or 'a file without a suffix'}; name it records.parquet or records.npz"
        )
    if suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{flag} {str(path)!r}: writing Parquet needs pyarrow; install the arrow extra "
                "(pip install 'regress-action[arrow]') or name the file records.npz"
            ) from None


def paired_table(records: PairedRecords, key: Callable[[int], str] | None = None) -> Table:
    """Every example of a comparison as named columns (see the module's docstring)."""
    ids = np.asarray(records.example_ids, dtype=np.int64)
    table: Table = {"example_id": ids}
    if key is not None:
        table["key"] = np.array([key(int(i)) for i in ids], dtype=np.str_)
    if records.groups is not None:
        table["group"] = np.asarray(records.groups)
    for side in ("baseline", "candidate"):
        for name, column in records.side(side).items():
            table[f"{side}_{name}"] = np.asarray(column)
    if all(f"{side}_{c}" in table for side in ("baseline", "candidate") for c in _LM):
        for side in ("baseline", "candidate"):
            table[f"{side}_loss"] = _mean_loss(table[f"{side}_nll_sum"], table[f"{side}_tokens"])
        table["loss_delta"] = table["candidate_loss"] - table["baseline_loss"]
    return table


_LM = ("nll_sum", "tokens")


def _mean_loss(nll: NDArray[Any], tokens: NDArray[Any]) -> NDArray[np.float64]:
    nll, tokens = np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    out = np.full(nll.shape, np.nan)
    np.divide(nll, tokens, out=out, where=tokens > 0)
    return out


def encode(table: Table, path: Path) -> bytes:
    """The table as the bytes of a file named `path` (its suffix picks the format)."""
    buffer = io.BytesIO()
    if Path(path).suffix.lower() == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(table), buffer, compression="zstd")
    else:
        np.savez_compressed(buffer, allow_pickle=False, **table)
    return buffer.getvalue()


def read_table(path: Path) -> Table:
    """A records file written by `encode`, as numpy columns (for tests and users' scripts)."""
    if Path(path).suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        read = pq.read_table(path)
        return {name: read.column(name).to_numpy() for name in read.column_names}
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
