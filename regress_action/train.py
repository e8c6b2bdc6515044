"""Brief, deterministic training of the zoo models for the demo and the tests.

Owns the three recipes per model (`baseline`, `improved`, `regressed`) and a plain training
loop. Imports torch only (never SQLAlchemy, PyGithub or jinja2).

Every variant keeps the zoo's default architecture, so its checkpoint reloads with the factory
(`regress_action.zoo:tiny_lm` / `:tiny_cnn`) and no factory kwargs; the variants differ only in
how they are trained:
- `improved`: about twice the steps, with a decaying learning rate;
- `regressed`: the baseline recipe with a share of the training targets replaced by random
  ones (a plausible data-pipeline bug).
Measured on the eval splits (seed 0): vision_tiny accuracy ≈ 0.74 / 0.81 / 0.59 and lm_tiny
perplexity ≈ 1.74 / 1.64 / 2.38 for baseline / improved / regressed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .builtin_data import builtin_split
from .zoo import tiny_cnn, tiny_lm

Variant = Literal["baseline", "improved", "regressed"]
VARIANTS: tuple[Variant, ...] = ("baseline", "improved", "regressed")

# One thread: the result does not depend on the machine's core count (reduction order), and
# for models this small extra threads cost more in synchronisation than they gain.
TRAIN_THREADS = 1


@dataclass(frozen=True)
class Recipe:
    """How one variant is trained."""

    steps: int
    lr: float
    batch_size: int
    target_noise: float = 0.0  # fraction of training targets replaced by random ones
    decay: bool = False  # linear learning-rate decay to 0 over the steps


LM_RECIPES: dict[Variant, Recipe] = {
    "baseline": Recipe(steps=150, lr=3e-3, batch_size=16),
    "improved": Recipe(steps=300, lr=5e-3, batch_size=16, decay=True),
    "regressed": Recipe(steps=150, lr=3e-3, batch_size=16, target_noise=0.25),
}
CNN_RECIPES: dict[Variant, Recipe] = {
    "baseline": Recipe(steps=250, lr=3e-3, batch_size=64),
    "improved": Recipe(steps=600, lr=3e-3, batch_size=64, decay=True),
    "regressed": Recipe(steps=250, lr=3e-3, batch_size=64, target_noise=0.5),
}


def train_tiny_lm(variant: Variant, seed: int = 0) -> nn.Module:
    """`tiny_lm()` trained on the `lm_tiny` train split; returned in eval mode on the CPU."""
    inputs, targets = builtin_split("lm_tiny", "train").tensors
    with _deterministic(seed):
        model = tiny_lm()
        recipe = LM_RECIPES[variant]
        targets = _corrupt(targets, recipe.target_noise, num_values=256)
        _fit(model, inputs, targets, recipe, _lm_loss)
    return model.eval()


def train_tiny_cnn(variant: Variant, seed: int = 0) -> nn.Module:
    """`tiny_cnn()` trained on the `vision_tiny` train split; returned in eval mode on the CPU."""
    inputs, targets = builtin_split("vision_tiny", "train").tensors
    with _deterministic(seed):
        model = tiny_cnn()
        recipe = CNN_RECIPES[variant]
        targets = _corrupt(targets, recipe.target_noise, num_values=10)
        _fit(model, inputs, targets, recipe, F.cross_entropy)
    return model.eval()


def _lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed, pin the thread count and deterministic kernels; restore all of it afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # fork_rng: the caller's global RNG state is untouched by our seeding and sampling.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(TRAIN_THREADS)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)


def _corrupt(targets: Tensor, fraction: float, num_values: int) -> Tensor:
    """Replace a fixed random `fraction` of the targets by random values (seeded by the caller)."""
    if fraction <= 0:
        return targets
    hit = torch.rand(targets.shape) < fraction
    noise = torch.randint(0, num_values, targets.shape)
    return torch.where(hit, noise, targets)


def _fit(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    recipe: Recipe,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
) -> None:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(recipe))
    order = torch.randperm(inputs.shape[0])
    for step in range(recipe.steps):
        start = step * recipe.batch_size % (inputs.shape[0] - recipe.batch_size + 1)
        batch = order[start : start + recipe.batch_size]
        loss = loss_fn(model(inputs[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        optimizer.step()
        schedule.step()


def _lr_factor(recipe: Recipe) -> Callable[[int], float]:
    def factor(step: int) -> float:
        return max(0.0, 1.0 - step / recipe.steps) if recipe.decay else 1.0

    return factor
