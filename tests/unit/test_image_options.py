"""Image eval sets under the image options: scaling, `image_size` (resize in the workers),
`normalize`, gray / RGB / RGBA files, and the references of folder and .npz examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from regress_action.data import load_eval_set
from regress_action.errors import DataError
from regress_action.spec import DataOptions


def _save(path: Path, pixels: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: the colour values are kept all the same
    _save(root / "cat" / "001.png", rgba, "RGBA")
    _save(root / "cat" / "002.png", rng.integers(0, 256, (6, 8), dtype=np.uint8), "L")
    _save(root / "dog" / "001.png", rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    _save(root / "dog" / "002.png", rng.integers(0, 256, (6, 8), dtype=np.uint8), "L")
    return root


def test_a_mixed_folder_reads_as_rgb_alpha_dropped_and_gray_repeated(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    eval_set = load_eval_set(root)
    first, label = eval_set.dataset[0]
    rgba = np.asarray(Image.open(root / "cat" / "001.png"))
    assert first.shape == (3, 6, 8) and int(label) == 0
    assert torch.equal(first, torch.from_numpy(rgba[..., :3].transpose(2, 0, 1) / np.float32(255)))
    gray = eval_set.dataset[2][0]  # round-robin: cat/001, dog/001, cat/002, dog/002
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert [eval_set.describe(i).key for i in range(4)] == [
        "cat/001.png", "dog/001.png", "cat/002.png", "dog/002.png",
    ]  # fmt: skip


def test_a_gray_folder_stays_one_channel(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        _save(tmp_path / "g" / name / "x.png", rng.integers(0, 256, (5, 5), dtype=np.uint8), "L")
    assert load_eval_set(tmp_path / "g").dataset[0][0].shape == (1, 5, 5)


def test_image_size_resizes_every_image_even_of_mixed_sizes(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    _save(root / "dog" / "003.png", np.zeros((10, 3, 3), dtype=np.uint8), "RGB")
    with pytest.raises(DataError, match="must share one size"):
        load_eval_set(root)
    eval_set = load_eval_set(root, options=DataOptions(image_size=(4, 5)))
    plain = load_eval_set(_folder(tmp_path / "again")).dataset[1][0]
    expected = torch.nn.functional.interpolate(
        plain[None], size=(4, 5), mode="bilinear", antialias=True, align_corners=False
    )[0]
    assert torch.allclose(eval_set.dataset[1][0], expected)
    assert {tuple(eval_set.dataset[i][0].shape) for i in range(5)} == {(3, 4, 5)}


def test_normalize_applies_mean_and_std_per_channel(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    plain = load_eval_set(root).dataset[1][0]
    options = DataOptions(normalize=((0.5, 0.4, 0.3), (0.2, 0.25, 0.5)))
    normed = load_eval_set(root, options=options).dataset[1][0]
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.5])
    assert torch.allclose(normed, (plain - mean.view(3, 1, 1)) / std.view(3, 1, 1))
    with pytest.raises(DataError, match=r"3 channel\(s\) but normalize gives 1 mean") as caught:
        load_eval_set(root, options=DataOptions(normalize=((0.5,), (0.5,))))
    assert "\n" not in str(caught.value)


def test_npz_images_take_the_options_and_are_known_by_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)  # channels-last
    path = tmp_path / "set.npz"
    np.savez(path, images=images, labels=np.arange(7) % 2)
    plain = load_eval_set(path)
    options = DataOptions(image_size=(4, 4), normalize=((0.5,) * 3, (0.5,) * 3))
    eval_set = load_eval_set(path, options=options, max_examples=5)
    inputs = eval_set.dataset.tensors[0]  # type: ignore[attr-defined]
    expected = torch.nn.functional.interpolate(
        plain.dataset.tensors[0][:5],
        size=(4, 4),
        mode="bilinear",
        antialias=True,  # type: ignore[attr-defined]
    )
    assert inputs.shape == (5, 3, 4, 4) and torch.allclose(inputs, (expected - 0.5) / 0.5)
    assert eval_set.fingerprint != plain.fingerprint
    assert eval_set.describe(3).key == "row 3"
    with pytest.raises(DataError, match="normalize gives 2 mean"):
        load_eval_set(path, options=DataOptions(normalize=((0.5, 0.5), (1.0, 1.0))))
