"""Demo training: deterministic, and the three variants are clearly ordered on the eval split."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from regress_action import train
from regress_action.data import load_eval_set
from regress_action.train import VARIANTS, Variant, train_tiny_cnn, train_tiny_lm

pytestmark = pytest.mark.slow  # trains six small models: ~30 s of CPU

MARGIN = 0.02  # well beyond the default 0.01 threshold


def _accuracy(model: nn.Module) -> float:
    correct = total = 0
    dataset = load_eval_set("vision_tiny").dataset
    with torch.inference_mode():
        for index in range(0, len(dataset), 250):  # type: ignore[arg-type]
            batch = [dataset[i] for i in range(index, index + 250)]
            images = torch.stack([image for image, _ in batch])
            labels = torch.stack([label for _, label in batch])
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(batch)
    return correct / total


def _perplexity(model: nn.Module) -> float:
    nll = tokens = 0.0
    dataset = load_eval_set("lm_tiny").dataset
    with torch.inference_mode():
        for index in range(0, len(dataset), 64):  # type: ignore[arg-type]
            batch = [dataset[i] for i in range(index, index + 64)]
            inputs = torch.stack([ids for ids, _ in batch])
            targets = torch.stack([ids for _, ids in batch])
            log_probs = torch.log_softmax(model(inputs).double(), dim=-1)
            nll -= float(log_probs.gather(2, targets[..., None]).sum())
            tokens += targets.numel()
    return math.exp(nll / tokens)


# Each variant is trained once for the whole module: training is the cost of this file.
@pytest.fixture(scope="module")
def cnns() -> dict[Variant, nn.Module]:
    return {variant: train_tiny_cnn(variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def lms() -> dict[Variant, nn.Module]:
    return {variant: train_tiny_lm(variant) for variant in VARIANTS}


@pytest.fixture(scope="module")
def accuracy(cnns: dict[Variant, nn.Module]) -> dict[Variant, float]:
    return {variant: _accuracy(model) for variant, model in cnns.items()}


@pytest.fixture(scope="module")
def perplexity(lms: dict[Variant, nn.Module]) -> dict[Variant, float]:
    return {variant: _perplexity(model) for variant, model in lms.items()}


def test_cnn_variants_are_clearly_ordered(accuracy: dict[Variant, float]) -> None:
    assert 0.6 <= accuracy["baseline"] <= 0.9
    assert accuracy["improved"] >= accuracy["baseline"] + MARGIN
    assert accuracy["regressed"] <= accuracy["baseline"] - MARGIN
    assert accuracy["improved"] < 0.98  # not saturated: comparisons stay interesting


def test_lm_variants_are_clearly_ordered(perplexity: dict[Variant, float]) -> None:
    assert perplexity["baseline"] < 4.0  # learned far more than uniform bytes (256)
    assert perplexity["improved"] <= perplexity["baseline"] - MARGIN
    assert perplexity["regressed"] >= perplexity["baseline"] + MARGIN


def test_training_is_deterministic_and_leaves_global_state_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A tenth of the steps: seeding, noise and batch order are all exercised from step one.
    short = replace(train.CNN_RECIPES["regressed"], steps=25)
    monkeypatch.setitem(train.CNN_RECIPES, "regressed", short)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    first = train_tiny_cnn("regressed", seed=1).state_dict()
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()
    second = train_tiny_cnn("regressed", seed=1).state_dict()
    other_seed = train_tiny_cnn("regressed", seed=2).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not all(torch.equal(first[key], other_seed[key]) for key in first)


def test_trained_models_are_in_eval_mode(
    cnns: dict[Variant, nn.Module], lms: dict[Variant, nn.Module]
) -> None:
    models = [*cnns.values(), *lms.values()]
    assert not any(module.training for model in models for module in model.modules())
