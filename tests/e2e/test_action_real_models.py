"""End to end through the Action's entrypoint with the models and data people have: Hugging Face
model folders (an image classifier on scikit-learn's handwritten digits as PNG files, a BERT
text classifier with a tokenizer trained here), and state-dict checkpoints whose architecture
changed between baseline and candidate. Everything is built offline in the test; the comment
goes over real HTTP to the local GitHub-compatible server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from regress_action.report import Report
from regress_action.store import ExperimentDB
from tests.e2e.test_action_e2e import Runner, bodies, runner  # noqa: F401 (fixture)
from tests.gh_server import BOT_TOKEN

if TYPE_CHECKING:
    import torch

pytestmark = pytest.mark.slow


def _common(**more: str) -> dict[str, str]:
    return {"github-token": BOT_TOKEN, "device": "cpu", "significance": "off", **more}


def test_an_architecture_change_compares_from_state_dicts(runner: Runner) -> None:  # noqa: F811
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_cnn

    torch.manual_seed(0)
    models = runner.workspace / "models"
    save_checkpoint(tiny_cnn(width=16).eval(), models / "baseline.safetensors", "safetensors")
    save_checkpoint(tiny_cnn(width=4).eval(), models / "candidate.safetensors", "safetensors")
    inputs = _common(
        **{
            "baseline-checkpoint": "models/baseline.safetensors",
            "candidate-checkpoint": "models/candidate.safetensors",
            "task": "classification",
            "num-classes": "10",
            "dataset": "vision_tiny",
            "model-factory": "regress_action.zoo:tiny_cnn",
            "model-kwargs": '{"width": 16}',
            "candidate-model-kwargs": '{"width": 4}',
            "fail-on-regression": "false",
        }
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 0, result.stdout + result.stderr
    with ExperimentDB(runner.workspace / "regress-action.db") as db:
        runs = {run.name: run.source for run in db.list_runs()}
    assert runs["baseline"].factory_kwargs == {"width": 16}
    assert runs["candidate"].factory_kwargs == {"width": 4}
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.dataset.n > 0 and set(report.metrics) >= {"accuracy", "loss"}
    assert len(bodies(runner.server)) == 1
    # Without the candidate's own kwargs the shared factory cannot load the narrower weights:
    # one line naming the inputs, nothing registered for the failed side.
    del inputs["candidate-model-kwargs"]
    inputs["report-name"] = "shared factory"
    failed = runner.run("action", inputs=inputs)
    assert failed.rc == 2, failed.stdout + failed.stderr
    (error,) = failed.lines("::error")
    assert "candidate-model-factory" in error


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _digits_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's handwritten digits (8×8 grey, 0–16) as PNG files `root/<digit>/<i>.png`;
    returns the images scaled to [0, 1] and the labels, in file order."""
    import numpy as np
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"{i:04d}.png")
    return torch.from_numpy(pixels).float().div(255).unsqueeze(1), torch.from_numpy(digits.target)


def _vit(images: torch.Tensor, labels: torch.Tensor, steps: int, folder: Path) -> None:
    """A tiny ViT classifier trained `steps` steps on the digits, saved with save_pretrained."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
        id2label={i: str(i) for i in range(10)}, label2id={str(i): i for i in range(10)},
    )  # fmt: skip
    model = ViTForImageClassification(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (64,), generator=generator)
        loss = model(pixel_values=images[batch], labels=labels[batch]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().save_pretrained(folder)


def test_hugging_face_image_classifiers_on_the_digits(runner: Runner) -> None:  # noqa: F811
    images, labels = _digits_folder(runner.workspace / "digits")
    _vit(images, labels, 300, runner.workspace / "models" / "baseline")
    _vit(images, labels, 20, runner.workspace / "models" / "candidate")
    inputs = _common(
        **{
            "baseline-checkpoint": "models/baseline",
            "candidate-checkpoint": "models/candidate",
            "task": "classification",
            "num-classes": "10",
            "dataset": "digits",
        }
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.outputs["status"] == "regressed"
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.baseline.format == report.candidate.format == "hf"
    assert report.dataset.n == len(labels) and report.dataset.class_names == [
        str(i) for i in range(10)
    ]
    accuracy = report.metrics["accuracy"]
    assert accuracy.baseline > 0.8 > accuracy.candidate
    # Flipped examples are named by their file, as the user finds them in the folder.
    wrong = report.flips.newly_wrong if report.flips else []
    assert wrong and all(e.key and e.key.endswith(".png") for e in wrong)
    (body,) = bodies(runner.server)
    assert wrong[0].key in body.replace("\\_", "_").replace("\\.", ".")


POSITIVE = ["great", "wonderful", "superb", "delightful", "moving", "brilliant"]
NEGATIVE = ["dull", "awful", "tedious", "clumsy", "boring", "dreadful"]
FILLER = ["the", "film", "plot", "acting", "was", "quite", "really", "and", "story", "cast"]


def _reviews(n: int, seed: int) -> list[dict[str, object]]:
    """Short reviews whose label is carried by one sentiment word among filler words."""
    import random

    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(FILLER, k=rng.randint(3, 9))
        words.insert(
            rng.randrange(len(words) + 1), rng.choice(POSITIVE if label == "positive" else NEGATIVE)
        )
        rows.append({"text": " ".join(words).capitalize() + ".", "label": label})
    return rows


def _bert(tokenizer: Path, rows: list[dict[str, object]], steps: int, folder: Path) -> None:
    """A 2-layer BERT classifier trained `steps` steps, saved with its tokenizer.json."""
    import shutil

    import torch
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertForSequenceClassification

    tok = Tokenizer.from_file(str(tokenizer))
    names = sorted({str(row["label"]) for row in rows})
    encoded = [tok.encode(str(row["text"])).ids for row in rows]
    length = max(len(ids) for ids in encoded)
    pad = tok.token_to_id("[PAD]")
    ids = torch.full((len(rows), length), pad)
    for i, row_ids in enumerate(encoded):
        ids[i, : len(row_ids)] = torch.tensor(row_ids)
    mask = (ids != pad).long()
    labels = torch.tensor([names.index(str(row["label"])) for row in rows])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
        num_labels=len(names), pad_token_id=pad,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(steps):
        batch = torch.arange(step * 32, step * 32 + 32) % len(rows)
        loss = model(input_ids=ids[batch], attention_mask=mask[batch], labels=labels[batch]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval().save_pretrained(folder)
    shutil.copy(tokenizer, folder / "tokenizer.json")


def _word_tokenizer(texts: list[str], path: Path) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    tok.save(str(path))
    return path


def test_a_hugging_face_text_classifier_on_labelled_jsonl(runner: Runner) -> None:  # noqa: F811
    train, held_out = _reviews(400, seed=0), _reviews(200, seed=1)
    held_out[0]["text"] = "Great | <b>acting</b> *and* [story](http://x)."
    _write_jsonl(runner.workspace / "data" / "reviews.jsonl", held_out)
    tokenizer = _word_tokenizer([str(r["text"]) for r in train + held_out], runner.home / "t.json")
    _bert(tokenizer, train, 150, runner.workspace / "models" / "baseline")
    _bert(tokenizer, train, 2, runner.workspace / "models" / "candidate")
    inputs = _common(
        **{
            "baseline-checkpoint": "models/baseline",
            "candidate-checkpoint": "models/candidate",
            "task": "classification",
            "modality": "text",
            "num-classes": "2",
            "dataset": "data/reviews.jsonl",
            "tokenizer": "model",
        }
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 1, result.stdout + result.stderr
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.dataset.class_names == ["negative", "positive"]
    assert report.metrics["accuracy"].baseline > 0.9 > report.metrics["accuracy"].candidate
    wrong = report.flips.newly_wrong if report.flips else []
    assert wrong and all(e.key and e.key.startswith("line ") and e.text for e in wrong)
    (body,) = bodies(runner.server)
    assert "<b>" not in body and "](http://x)" not in body  # user text is escaped
    shown = wrong[0].text or ""
    assert shown.split()[0].rstrip(".") in body


FACTORY = '''
import torch
from torch.utils.data import Dataset


class HeldOut(Dataset):
    """Images made from the index; examples named by the user's own ids."""

    fingerprint = "held-out-v1"

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 16, 16, generator=g), i % 10

    def example_id(self, i):
        return f"sample-{i:03d}"


def held_out(n=40):
    return HeldOut(n)
'''


def test_a_dataset_factory_from_the_workspace(runner: Runner) -> None:  # noqa: F811
    import torch

    from regress_action.models import save_checkpoint
    from regress_action.zoo import tiny_cnn

    (runner.workspace / "evals").mkdir()
    (runner.workspace / "evals" / "sets.py").write_text(FACTORY)
    torch.manual_seed(0)
    for name in ("baseline", "candidate"):
        save_checkpoint(tiny_cnn().eval(), runner.workspace / f"{name}.pt2", "export",
                        torch.zeros(2, 3, 16, 16))  # fmt: skip
    inputs = _common(
        **{
            "baseline-checkpoint": "baseline.pt2",
            "candidate-checkpoint": "candidate.pt2",
            "task": "classification",
            "num-classes": "10",
            "dataset-factory": "evals.sets:held_out",
            "dataset-kwargs": '{"n": 24}',
            "fail-on-regression": "false",
        }
    )
    result = runner.run("action", inputs=inputs)
    assert result.rc == 0, result.stdout + result.stderr
    report = Report.load(runner.workspace / result.outputs["report-json"])
    assert report.dataset.name == "evals.sets:held_out" and report.dataset.n == 24
    flips = report.flips.newly_wrong + report.flips.newly_right if report.flips else []
    assert all(e.key and e.key.startswith("sample-") for e in flips)
    inputs["dataset-factory"] = "evals.sets:missing"
    inputs["report-name"] = "missing"
    failed = runner.run("action", inputs=inputs)
    assert failed.rc == 2
    (error,) = failed.lines("::error")
    assert "evals.sets:missing" in error
