"""Hugging Face model folders as checkpoints (`format: hf`), and the checks at registration.

Real tiny transformers models built offline from small configs and saved with `save_pretrained`
into tmp_path: a 2-layer GPT-2 over bytes (vocab 256, so it reads `lm_tiny`), ViT and ResNet
image classifiers (3 classes, on an `.npz` the test writes), a BERT sequence classifier. Every
metric the comparison reports is checked against a plain loop over the Hugging Face models;
every refusal is one line; the folder's hash covers every file.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from regress_action.app import CheckpointRequest, CompareRequest, register_checkpoint, run_compare
from regress_action.builtin_data import builtin_split
from regress_action.errors import ChecksumMismatchError, ModelLoadError, ModelOutputError
from regress_action.models import load_model, make_source, save_checkpoint
from regress_action.spec import IGNORE_INDEX, ModelSource, RunCreate, TaskSpec
from regress_action.store import ExperimentDB
from regress_action.zoo import tiny_lm
from tests.cli_runner import run_cli

LM = TaskSpec(modality="text", task="lm", vocab_size=256)
VISION = TaskSpec(modality="vision", task="classification", num_classes=3)
TEXT = TaskSpec(modality="text", task="classification", num_classes=4)


def _gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=256, n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def _vit(seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3,
    )  # fmt: skip
    return ViTForImageClassification(config).eval()


def _resnet(seed: int) -> ResNetForImageClassification:
    torch.manual_seed(seed)
    config = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3
    )
    return ResNetForImageClassification(config).eval()


def _bert_config(**extra: Any) -> BertConfig:
    return BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, **extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    made = {
        "gpt2_a": _gpt2(0),
        "gpt2_b": _gpt2(1),
        "vit_a": _vit(0),
        "vit_b": _vit(1),
        "resnet_a": _resnet(0),
        "resnet_b": _resnet(1),
        "bert": BertForSequenceClassification(_bert_config(num_labels=4)).eval(),
        "bert_base": BertModel(_bert_config()).eval(),
    }
    for name, model in made.items():
        save_checkpoint(model, root / name, "hf")
    return {name: root / name for name in made}


@pytest.fixture
def db(tmp_path: Path) -> ExperimentDB:
    return ExperimentDB(f"sqlite:///{tmp_path / 'regress.db'}")


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _register(db: ExperimentDB, folder: Path, task: TaskSpec, **kwargs: Any) -> int:
    request = CheckpointRequest(checkpoint=str(folder), task=task, **kwargs)
    return register_checkpoint(db, request).id


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------- compare, against plain loops


def test_gpt2_folders_compare_like_a_plain_loop(folders: dict[str, Path], db: ExperimentDB) -> None:
    base = _register(db, folders["gpt2_a"], LM)
    cand = _register(db, folders["gpt2_b"], LM)
    request = CompareRequest(base, cand, "lm_tiny", max_examples=24, batch_size=8, device="cpu")
    report = run_compare(request, db).report

    inputs, targets = builtin_split("lm_tiny", "eval", 24).tensors
    for side, folder in (("baseline", "gpt2_a"), ("candidate", "gpt2_b")):
        model = GPT2LMHeadModel.from_pretrained(folders[folder], local_files_only=True).eval()
        with torch.no_grad():
            logits = model(inputs).logits
        mask = targets != IGNORE_INDEX
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
        tokens = int(mask.sum())
        correct = int(((logits.argmax(-1) == targets) & mask).sum())
        loss = float(nll) / tokens
        expected = {"loss": loss, "perplexity": math.exp(loss), "token_accuracy": correct / tokens}
        for name, value in expected.items():
            assert getattr(report.metrics[name], side) == pytest.approx(value, rel=1e-5)
    assert report.baseline.format == "hf" and report.dataset.n == 24


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_image_classifier_folders_compare_like_a_plain_loop(
    kind: str, folders: dict[str, Path], db: ExperimentDB, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((40, 3, 8, 8), dtype=np.float32)
    labels = rng.integers(0, 3, 40)
    np.savez(tmp_path / "images.npz", images=images, labels=labels)
    base = _register(db, folders[f"{kind}_a"], VISION)
    cand = _register(db, folders[f"{kind}_b"], VISION)
    request = CompareRequest(base, cand, str(tmp_path / "images.npz"), batch_size=16, device="cpu")
    report = run_compare(request, db).report

    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    auto = {"vit": ViTForImageClassification, "resnet": ResNetForImageClassification}[kind]
    for side, folder in (("baseline", f"{kind}_a"), ("candidate", f"{kind}_b")):
        model = auto.from_pretrained(folders[folder], local_files_only=True)
        with torch.no_grad():
            logits = model.eval()(x).logits
        accuracy = float((logits.argmax(-1) == y).double().mean())
        loss = float(F.cross_entropy(logits.double(), y))
        assert getattr(report.metrics["accuracy"], side) == pytest.approx(accuracy, abs=1e-12)
        assert getattr(report.metrics["loss"], side) == pytest.approx(loss, rel=1e-5)


def test_bert_classifier_loads_and_is_checked_against_num_classes(
    folders: dict[str, Path], db: ExperimentDB
) -> None:
    model = load_model(make_source(folders["bert"]), task=TEXT)
    assert type(model).__name__ == "BertForSequenceClassification" and not model.training
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 4)
    assert _register(db, folders["bert"], TEXT) == 1
    three = TaskSpec(modality="text", task="classification", num_classes=3)
    with pytest.raises(ModelOutputError) as exc:
        _register(db, folders["bert"], three)
    message = _one_line(exc)
    assert "4 output classes" in message and "num_classes 3" in message
    assert "--num-classes 4" in message
    assert len(db.list_runs()) == 1


def test_a_base_model_without_the_task_head_is_refused(folders: dict[str, Path]) -> None:
    with pytest.raises(ModelLoadError) as exc:
        load_model(make_source(folders["bert_base"]), task=TEXT)
    message = _one_line(exc)
    assert "classifier.weight" in message and "at random" in message


def test_gpt2_output_size_is_checked_at_registration(
    folders: dict[str, Path], db: ExperimentDB
) -> None:
    wrong = TaskSpec(modality="text", task="lm", vocab_size=300)
    with pytest.raises(ModelOutputError) as exc:
        _register(db, folders["gpt2_a"], wrong)
    message = _one_line(exc)
    assert "predicts 256 tokens" in message and "--vocab-size 256" in message
    assert db.list_runs() == []


def test_lm_of_another_format_runs_once_on_dummy_tokens(tmp_path: Path, db: ExperimentDB) -> None:
    save_checkpoint(
        tiny_lm(vocab_size=64, dim=8), tmp_path / "lm.pt2", "export", torch.zeros(1, 8).long()
    )
    wrong = TaskSpec(modality="text", task="lm", vocab_size=256)
    with pytest.raises(ModelOutputError, match=r"predicts 64 tokens .* --vocab-size 64"):
        _register(db, tmp_path / "lm.pt2", wrong)
    right = TaskSpec(modality="text", task="lm", vocab_size=64)
    assert _register(db, tmp_path / "lm.pt2", right) == 1


# ---------------------------------------------------------------- the CLI


def test_runs_add_registers_a_folder_once(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(folders["gpt2_a"], tmp_path)
    db = ["--db", f"sqlite:///{tmp_path / 'regress.db'}"]
    add = ["runs", "add", folder.name, "--task", "lm", *db]
    code, out, err = run_cli(add, tmp_path, monkeypatch)
    assert (code, out.strip(), err) == (0, "1", "")
    # Again, by another spelling of the path and with a factory it does not need: the same run.
    again = ["runs", "add", f"./{folder.name}/", "--task", "lm", "--factory", "a.b:c", *db]
    assert run_cli(again, tmp_path, monkeypatch)[:2] == (0, "1\n")
    code, out, err = run_cli([*add, "--vocab-size", "300"], tmp_path, monkeypatch)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "predicts 256 tokens" in err and "Traceback" not in err
    hub = ["runs", "add", "org/name", "--task", "lm", *db]
    code, out, err = run_cli(hub, tmp_path, monkeypatch)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "huggingface-cli download org/name --local-dir DIR" in err
    with ExperimentDB(db[1]) as store:
        runs = store.list_runs()
    assert [(run.source.format, run.source.factory) for run in runs] == [("hf", None)]
    # A second folder, then `compare` of the two, as a user runs it.
    other = _copy(folders["gpt2_b"], tmp_path)
    assert run_cli(["runs", "add", other.name, "--task", "lm", *db], tmp_path, monkeypatch)[:2] == (
        0,
        "2\n",
    )
    compare = ["compare", "--baseline-run-id", "1", "--candidate-run-id", "2", *db]
    code, out, err = run_cli(
        [*compare, "--dataset", "lm_tiny", "--max-examples", "8", "--device", "cpu"],
        tmp_path,
        monkeypatch,
    )
    assert code in (0, 1) and "Traceback" not in err, err
    report = json.loads(out)
    assert report["baseline"]["format"] == "hf" and report["dataset"]["n"] == 8


# ---------------------------------------------------------------- refusals, one line each


@pytest.mark.parametrize("hub_id", ["gpt2", "openai-community/gpt2", "org/name-v1.5"])
def test_a_hub_id_is_refused_with_how_to_download_it(
    hub_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as exc:
        make_source(hub_id)
    message = _one_line(exc)
    assert f"huggingface-cli download {hub_id} --local-dir DIR" in message
    assert "save_pretrained" in message and "never downloaded" in message


def test_a_missing_file_is_not_taken_for_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.pt not found; check the path$"):
        make_source(tmp_path / "model.pt")


_CUSTOM_CODE = """
from transformers import GPT2LMHeadModel


class DoubledLM(GPT2LMHeadModel):
    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2  # shows that this file's code ran
        return out
"""


def test_custom_code_needs_trust_remote_code(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(folders["gpt2_a"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_doubled.DoubledLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_doubled.py").write_text(_CUSTOM_CODE)
    source = make_source(folder)
    with pytest.raises(ModelLoadError) as exc:
        load_model(source, task=LM)
    message = _one_line(exc)
    assert "auto_map" in message and "trust_remote_code=True" in message
    # With the opt-in the folder's own class loads (transformers copies the code into its
    # modules cache: kept under tmp_path here).
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    loaded = load_model(source, task=LM, trust_remote_code=True)
    tokens = torch.tensor([[1, 2, 3]])
    assert type(loaded).__name__ == "DoubledLM"
    torch.testing.assert_close(loaded(tokens).logits, 2 * _gpt2(0)(tokens).logits)


def test_the_cli_opts_in_to_custom_code_for_runs_add_and_compare(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = _copy(folders["gpt2_a"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_doubled.DoubledLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_doubled.py").write_text(_CUSTOM_CODE)
    plain = _copy(folders["gpt2_b"], tmp_path)
    db = ["--db", f"sqlite:///{tmp_path / 'regress.db'}"]
    add = ["runs", "add", folder.name, "--task", "lm", *db]
    code, _, err = run_cli(add, tmp_path, monkeypatch)
    assert code == 2 and "auto_map" in err and len(err.strip().splitlines()) == 1
    assert run_cli([*add, "--trust-remote-code"], tmp_path, monkeypatch)[:2] == (0, "1\n")
    assert run_cli(["runs", "add", plain.name, "--task", "lm", *db], tmp_path, monkeypatch)[0] == 0
    compare = [
        "compare", "--baseline-run-id", "1", "--candidate-run-id", "2", "--dataset", "lm_tiny",
        "--max-examples", "4", "--device", "cpu", "--no-record", *db,
    ]  # fmt: skip
    code, _, err = run_cli(compare, tmp_path, monkeypatch)
    assert code == 2 and "auto_map" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli([*compare, "--trust-remote-code"], tmp_path, monkeypatch)
    assert code in (0, 1) and json.loads(out)["dataset"]["n"] == 4, err


def test_pickled_weights_need_allow_pickle(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders["gpt2_a"], tmp_path)
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    source = make_source(folder)
    with pytest.raises(ModelLoadError) as exc:
        load_model(source, task=LM)
    assert "pytorch_model.bin" in _one_line(exc) and "--allow-pickle" in str(exc.value)
    loaded = load_model(source, task=LM, allow_pickle=True)
    tokens = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(tokens).logits, _gpt2(0)(tokens).logits)


def test_broken_folders_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"without config\.json") as exc:
        make_source(empty)
    _one_line(exc)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(folders["gpt2_a"] / "config.json", no_weights)
    with pytest.raises(ModelLoadError, match="no PyTorch weights") as exc:
        make_source(no_weights)
    _one_line(exc)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"config\.json is not readable JSON"):
        make_source(tmp_path / "bad")
    with pytest.raises(ModelLoadError, match="is not a folder; format hf"):
        make_source(folders["gpt2_a"] / "model.safetensors", format="hf")
    with pytest.raises(ModelLoadError, match="is a directory, not a file"):
        make_source(folders["gpt2_a"], format="safetensors")


def test_sharded_weights_load_and_a_missing_shard_is_refused(tmp_path: Path) -> None:
    _gpt2(0).save_pretrained(tmp_path / "sharded", max_shard_size=40_000)
    folder = tmp_path / "sharded"
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    tokens = torch.tensor([[5, 6, 7]])
    loaded = load_model(make_source(folder), task=LM)
    torch.testing.assert_close(loaded(tokens).logits, _gpt2(0)(tokens).logits)
    shards[-1].unlink()
    with pytest.raises(ModelLoadError) as exc:
        make_source(folder)
    assert shards[-1].name in _one_line(exc)


def test_without_transformers_the_folder_says_to_install_the_extra(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(folders["gpt2_a"])
    save_checkpoint(tiny_lm(dim=8), tmp_path / "lm.safetensors", "safetensors")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    for attempt in (lambda: make_source(folders["gpt2_a"]), lambda: load_model(source, task=LM)):
        with pytest.raises(ModelLoadError) as exc:
            attempt()
        assert "pip install 'regress-action[hf]'" in _one_line(exc)
    # Every other format still registers and loads.
    other = make_source(tmp_path / "lm.safetensors", factory="regress_action.zoo:tiny_lm")
    assert other.format == "safetensors"
    load_model(other.model_copy(update={"factory_kwargs": {"dim": 8}}), verify_checksum=True)


# ---------------------------------------------------------------- the folder's hash


@pytest.mark.parametrize(
    "edit",
    ["config.json", "tokenizer.json", "model.safetensors", "rename", "remove"],
)
def test_any_change_to_the_folder_changes_its_hash(
    edit: str, folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders["gpt2_a"], tmp_path)
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    source = make_source(folder)
    assert make_source(folder).sha256 == source.sha256  # deterministic
    if edit == "rename":
        (folder / "tokenizer.json").rename(folder / "tokenizer2.json")
    elif edit == "remove":
        (folder / "generation_config.json").unlink()
    else:
        with (folder / edit).open("ab") as handle:
            handle.write(b" ")
    assert make_source(folder).sha256 != source.sha256
    with pytest.raises(ChecksumMismatchError) as exc:
        load_model(source, task=LM)
    assert "changed since it was registered" in _one_line(exc)


def test_bookkeeping_is_left_out_and_symlinks_must_stay_inside(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders["gpt2_a"], tmp_path)
    sha = make_source(folder).sha256
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "config.json.metadata").write_text("etag 1")
    assert make_source(folder).sha256 == sha
    (folder / "vocab_link.json").symlink_to(folder / "config.json")  # inside: hashed as a file
    assert make_source(folder).sha256 != sha
    (tmp_path / "outside.txt").write_text("x")
    (folder / "escape.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(ModelLoadError) as exc:
        make_source(folder)
    assert "outside the folder" in _one_line(exc)


# ---------------------------------------------------------------- no factory it did not use


def test_a_self_contained_checkpoint_records_no_factory(tmp_path: Path, db: ExperimentDB) -> None:
    save_checkpoint(tiny_lm(dim=8), tmp_path / "lm.ts", "torchscript", torch.zeros(1, 8).long())
    plain = make_source(tmp_path / "lm.ts")
    needless = make_source(
        tmp_path / "lm.ts", factory="regress_action.zoo:tiny_lm", factory_kwargs={"dim": 8}
    )
    assert needless == plain and needless.factory is None and needless.factory_kwargs == {}
    first = _register(db, tmp_path / "lm.ts", LM)
    again = _register(db, tmp_path / "lm.ts", LM, factory="regress_action.zoo:tiny_lm")
    assert first == again and len(db.list_runs()) == 1


def test_a_run_recorded_with_a_needless_factory_is_found_again(
    tmp_path: Path, db: ExperimentDB
) -> None:
    save_checkpoint(tiny_lm(dim=8), tmp_path / "lm.pt2", "export", torch.zeros(1, 8).long())
    source = make_source(tmp_path / "lm.pt2")
    old = ModelSource(**{**source.model_dump(), "factory": "regress_action.zoo:tiny_lm"})
    recorded = db.add_run(RunCreate(name="lm", task=LM, source=old))
    assert _register(db, tmp_path / "lm.pt2", LM) == recorded.id
    assert len(db.list_runs()) == 1
