"""Orchestration: one comparison from run ids to a recorded, rendered report.

Receives its collaborators (the ExperimentDB, the evaluator) as parameters so tests can pass
fakes. Imports torch only lazily, inside the default evaluator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .report import Report
from .spec import VerdictConfig


@dataclass(frozen=True)
class CompareRequest:
    """Everything one comparison needs besides its collaborators."""

    baseline_run_id: int
    candidate_run_id: int
    dataset: str
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    batch_size: int = 64
    max_examples: int | None = None
    device: str = "auto"
    report_name: str = "default"
    json_path: Path | None = None
    markdown_path: Path | None = None
    commit: str | None = None
    allow_pickle: bool = False
    trend_limit: int = 10
    record: bool = True


@dataclass
class CompareOutcome:
    report: Report
    markdown: str
