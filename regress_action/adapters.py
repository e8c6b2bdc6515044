"""Task adapters: turn (model output, targets) into per-example record columns, on the device.

Torch layer: imports torch, `spec`, `errors`, `metrics`; never SQL, GitHub or templates.
Everything here stays a tensor on the model's device; the engine concatenates once at the end
and converts to float64 numpy, so no per-batch host synchronisation slows the loop.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError, ModelOutputError
from .metrics import BYTE_VOCAB
from .spec import IGNORE_INDEX, TaskSpec


class Adapter(Protocol):
    @property
    def task(self) -> str: ...
    @property
    def num_classes(self) -> int | None: ...

    def records(self, output: Any, target: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
        """Per-example columns for one batch (each a 1-D tensor of the batch size)."""
        ...


def logits_of(output: Any, side: str) -> torch.Tensor:
    """The logits tensor of a model output: a tensor, a tuple/list's first item, `.logits`, or
    a mapping's "logits" (the shapes Hugging Face-style models return)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict):
        candidate = output.get("logits")
        if isinstance(candidate, torch.Tensor):
            return candidate
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise ModelOutputError(
        f"the {side} model returned {type(output).__name__}, not a logits tensor; "
        "return logits (or a tuple / mapping / object with `logits`)"
    )


class ClassificationAdapter:
    """Logits (B, C) and integer labels (B,) → loss, correct, prediction, confidence, top-5."""

    task = "classification"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.top5 = num_classes > 5

    def records(self, output: Any, target: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
        logits = logits_of(output, side)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ModelOutputError(
                f"the {side} model returned logits of shape {tuple(logits.shape)}, but the task "
                f"has num_classes={self.num_classes}; expected (batch, {self.num_classes}). "
                "Check the model or the task's num_classes"
            )
        if bool(((target < 0) | (target >= self.num_classes)).any()):
            bad = target[(target < 0) | (target >= self.num_classes)][0]
            raise DataError(
                f"the eval set has label {int(bad)}, outside 0..{self.num_classes - 1} for "
                f"num_classes={self.num_classes}; fix the labels or the task's num_classes"
            )
        logits = logits.float()
        log_probs = F.log_softmax(logits, dim=1)
        loss = -log_probs.gather(1, target.view(-1, 1)).squeeze(1)
        confidence, prediction = log_probs.max(dim=1)
        columns = {
            "label": target,
            "prediction": prediction,
            "correct": (prediction == target).to(torch.float32),
            "loss": loss,
            "confidence": confidence.exp(),
        }
        if self.top5:
            top5 = logits.topk(5, dim=1).indices
            columns["top5_correct"] = (top5 == target.view(-1, 1)).any(dim=1).to(torch.float32)
        return columns


class LMAdapter:
    """Causal LM: logits (B, T, V), next-token targets (B, T) padded with -100 →
    summed NLL, token count, correct tokens and bytes per example."""

    task = "lm"
    num_classes = None

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def records(self, output: Any, target: torch.Tensor, side: str) -> dict[str, torch.Tensor]:
        logits = logits_of(output, side)
        if (
            logits.ndim != 3
            or logits.shape[2] != self.vocab_size
            or logits.shape[:2] != target.shape
        ):
            raise ModelOutputError(
                f"the {side} model returned logits of shape {tuple(logits.shape)} for targets of "
                f"shape {tuple(target.shape)}; expected (batch, seq, {self.vocab_size}) for "
                f"vocab_size={self.vocab_size}. Check the model or the task's vocab_size"
            )
        mask = target != IGNORE_INDEX
        nll = F.cross_entropy(
            logits.float().flatten(0, 1),
            target.flatten(),
            ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view(target.shape)
        tokens = mask.sum(dim=1).to(torch.float64)
        correct = ((logits.argmax(dim=2) == target) & mask).sum(dim=1).to(torch.float64)
        columns = {
            "nll_sum": nll.to(torch.float64).sum(dim=1),
            "tokens": tokens,
            "correct_tokens": correct,
        }
        if self.vocab_size == BYTE_VOCAB:
            # Byte-level vocabulary: one token is one byte of text.
            columns["bytes"] = tokens
        return columns


def adapter_for(task: TaskSpec) -> Adapter:
    """The adapter that evaluates models for `task`."""
    if task.task == "classification":
        if task.num_classes is None:
            raise ConfigError("a classification task needs num_classes")
        return ClassificationAdapter(task.num_classes)
    if task.vocab_size is None:
        raise ConfigError("an lm task needs vocab_size")
    return LMAdapter(task.vocab_size)
