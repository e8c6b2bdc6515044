"""Checkpoints: every format round-trips, unsafe / broken / changed files fail with one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from regress_action.checkpoints import Probe
from regress_action.cli_args import build_parser
from regress_action.errors import ChecksumMismatchError, ModelLoadError
from regress_action.formats import REGISTRY, FormatEntry, FormatRegistry, LoadContext
from regress_action.models import (
    ExportedModule,
    detect_format,
    load_model,
    make_source,
    save_checkpoint,
    sha256_file,
)
from regress_action.spec import CheckpointFormat, ModelSource
from regress_action.zoo import tiny_cnn, tiny_lm

LM_FACTORY = "regress_action.zoo:tiny_lm"
CNN_FACTORY = "regress_action.zoo:tiny_cnn"
# The single-file formats (a model folder, `hf`, has its own tests in test_hf_models.py).
FORMATS: tuple[CheckpointFormat, ...] = tuple(e.name for e in REGISTRY if not e.folder)


def _lm() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return tiny_lm(dim=16, context=8).eval(), torch.randint(0, 256, (2, 12))


def _cnn() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return tiny_cnn(width=4).eval(), torch.rand(2, 3, 16, 16)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def _save(tmp_path: Path, fmt: CheckpointFormat, module: nn.Module, x: torch.Tensor) -> Path:
    path = tmp_path / f"model.{fmt}"
    save_checkpoint(module, path, fmt, example_input=x)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("build", "factory", "kwargs"),
    [(_lm, LM_FACTORY, {"dim": 16, "context": 8}), (_cnn, CNN_FACTORY, {"width": 4})],
    ids=["lm", "cnn"],
)
def test_every_format_round_trips_with_identical_outputs(
    tmp_path: Path, fmt: CheckpointFormat, build: object, factory: str, kwargs: dict[str, int]
) -> None:
    module, x = build()  # type: ignore[operator]
    path = _save(tmp_path, fmt, module, x)
    needs_factory = REGISTRY.get(fmt).needs_factory
    source = make_source(
        path,
        factory=factory if needs_factory else None,
        factory_kwargs=kwargs if needs_factory else None,
    )
    assert source.format == fmt
    assert source.sha256 == sha256_file(path)
    loaded = load_model(source, allow_pickle=fmt == "pickle")
    assert not loaded.training
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)
        # Another batch size (and sequence length) still runs: export keeps those dims dynamic.
        other = torch.cat([x, x, x])[:, ..., : x.shape[-1] - 1] if x.dim() == 2 else x[:1]
        torch.testing.assert_close(loaded(other), module(other), rtol=0, atol=0)


def test_exported_model_tolerates_eval_and_train(tmp_path: Path) -> None:
    module, x = _cnn()
    loaded = load_model(make_source(_save(tmp_path, "export", module, x)))
    assert isinstance(loaded, ExportedModule)
    assert loaded.train().training and not loaded.eval().training


def test_format_is_detected_from_content_not_name(tmp_path: Path) -> None:
    module, x = _cnn()
    weights = tmp_path / "weights.bin"
    save_checkpoint(module, weights, "safetensors")
    assert detect_format(weights) == "safetensors"
    nested = tmp_path / "trainer.ckpt"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, nested)
    assert detect_format(nested) == "state_dict"
    source = make_source(nested, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    torch.testing.assert_close(load_model(source)(x), module(x), rtol=0, atol=0)


def test_legacy_torch_save_format_is_detected(tmp_path: Path) -> None:
    module, x = _cnn()
    weights, whole = tmp_path / "legacy_weights.pt", tmp_path / "legacy_whole.pt"
    torch.save(module.state_dict(), weights, _use_new_zipfile_serialization=False)
    torch.save(module, whole, _use_new_zipfile_serialization=False)
    assert (detect_format(weights), detect_format(whole)) == ("state_dict", "pickle")
    source = make_source(weights, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    torch.testing.assert_close(load_model(source)(x), module(x), rtol=0, atol=0)


def test_pickled_whole_model_is_refused_without_opt_in(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "pickle", module, x)
    source = make_source(path)
    assert source.format == "pickle"
    with pytest.raises(ModelLoadError) as exc:
        load_model(source)
    assert _one_line(exc) == (
        f"checkpoint {path} is a pickled whole model; loading it can run arbitrary code. "
        "Re-save it as safetensors or a state dict, or pass --allow-pickle if you trust it"
    )
    torch.testing.assert_close(load_model(source, allow_pickle=True)(x), module(x))


def test_pickle_registered_as_state_dict_is_still_refused(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "pickle", module, x)
    source = make_source(path, factory=CNN_FACTORY, format="state_dict")
    with pytest.raises(ModelLoadError, match="pickled Python objects"):
        load_model(source)


def test_checksum_mismatch(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "safetensors", module, x)
    source = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    with torch.no_grad():
        module[1].bias.add_(1.0)  # type: ignore[index]
    save_checkpoint(module, path, "safetensors")
    with pytest.raises(ChecksumMismatchError) as exc:
        load_model(source)
    message = _one_line(exc)
    assert f"sha256 {source.sha256[:12]}… recorded, {sha256_file(path)[:12]}… now" in message
    assert "regress-action runs add" in message
    reloaded = load_model(source, verify_checksum=False)
    torch.testing.assert_close(reloaded(x), module(x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_checkpoint_is_a_one_line_error(tmp_path: Path, fmt: CheckpointFormat) -> None:
    module, x = _cnn()
    path = _save(tmp_path, fmt, module, x)
    source = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelLoadError) as exc:
        detect_format(path)
    assert "truncated or corrupt" in _one_line(exc)
    with pytest.raises(ModelLoadError) as exc:
        load_model(source, verify_checksum=False, allow_pickle=True)
    assert str(path) in _one_line(exc)


def test_garbage_file_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("not a model")
    with pytest.raises(ModelLoadError) as exc:
        make_source(path, factory=CNN_FACTORY)
    assert "truncated or corrupt" in _one_line(exc)


def test_missing_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelLoadError) as exc:
        make_source(path, factory=CNN_FACTORY)
    assert _one_line(exc) == f"checkpoint {path} not found; check the path"
    source = ModelSource(checkpoint=str(path), format="safetensors", sha256="0" * 64)
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(source)


def test_weights_need_a_factory(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "state_dict", module, x)
    with pytest.raises(ModelLoadError) as exc:
        make_source(path)
    assert "regress_action.zoo:tiny_cnn" in _one_line(exc)


@pytest.mark.parametrize(
    ("factory", "kwargs", "expected"),
    [
        ("regress_action.zoo.tiny_cnn", {}, "is not of the form 'package.module:callable'"),
        ("no_such_package_xyz.models:build", {}, "cannot import 'no_such_package_xyz.models'"),
        ("regress_action.zoo:tiny_cnm", {}, "has no callable 'tiny_cnm'"),
        (CNN_FACTORY, {"widht": 4}, "failed with kwargs {'widht': 4} (TypeError"),
        ("regress_action.spec:TaskSpec", {}, "failed with kwargs"),
        ("regress_action.models:sha256_file", {"path": __file__}, "returned a str"),
    ],
)
def test_factory_errors(
    tmp_path: Path, factory: str, kwargs: dict[str, object], expected: str
) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "safetensors", module, x)
    source = ModelSource(
        checkpoint=str(path),
        format="safetensors",
        sha256=sha256_file(path),
        factory=factory,
        factory_kwargs=kwargs,
    )
    with pytest.raises(ModelLoadError) as exc:
        load_model(source)
    assert expected in _one_line(exc)


def test_architecture_mismatch_lists_keys_and_shapes(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "state_dict", module, x)
    wider = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 8})
    with pytest.raises(ModelLoadError) as exc:
        load_model(wider)
    message = _one_line(exc)
    assert "shape mismatch 1.weight (4, 3, 3, 3) vs (8, 3, 3, 3) in the model" in message
    assert "(+4 more)" in message  # 7 tensors differ, 3 are shown
    lm = make_source(path, factory=LM_FACTORY)
    with pytest.raises(ModelLoadError) as exc:
        load_model(lm)
    assert "missing keys embed.weight" in _one_line(exc)
    assert "unexpected keys 1.weight, 1.bias, 4.weight (+" in str(exc.value)


def _write_user_module(root: Path) -> str:
    name = f"user_models_{uuid.uuid4().hex[:8]}"
    (root / name).mkdir()
    (root / name / "__init__.py").write_text("")
    (root / name / "nets.py").write_text(
        "import torch\n\n"
        "class Doubler(torch.nn.Module):\n"
        "    def __init__(self, size=3):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(size, size)\n\n"
        "    def forward(self, x):\n"
        "        return 2 * self.linear(x)\n\n"
        "def build(size=3):\n"
        "    return Doubler(size)\n"
    )
    return name


def test_factory_is_imported_from_the_workdir(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    package = _write_user_module(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    torch.manual_seed(0)
    weights = nn.Linear(5, 5)
    save_checkpoint(nn.ModuleDict({"linear": weights}), repo / "m.safetensors", "safetensors")
    source = make_source(
        repo / "m.safetensors", factory=f"{package}.nets:build", factory_kwargs={"size": 5}
    )
    with pytest.raises(ModelLoadError, match=f"cannot import '{package}.nets'"):
        load_model(source, workdir=elsewhere)
    path_before = list(sys.path)
    loaded = load_model(source, workdir=repo)
    assert sys.path == path_before
    x = torch.randn(2, 5)
    torch.testing.assert_close(loaded(x), 2 * weights(x))


def test_relative_checkpoint_resolves_against_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, x = _cnn()
    _save(tmp_path, "torchscript", module, x)
    monkeypatch.chdir(tmp_path)
    source = make_source("model.torchscript")
    assert source.checkpoint == "model.torchscript"
    monkeypatch.chdir(tmp_path.parent)
    torch.testing.assert_close(load_model(source, workdir=tmp_path)(x), module(x))


def test_pickled_user_class_is_detected_and_loads_from_workdir(tmp_path: Path) -> None:
    package = _write_user_module(tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        nets = __import__(f"{package}.nets", fromlist=["build"])
        module = nets.build(4)
    finally:
        sys.path.remove(str(tmp_path))
    path = tmp_path / "whole.pt"
    torch.save(module, path)
    sys.modules.pop(f"{package}.nets")
    sys.modules.pop(package)
    assert detect_format(path) == "pickle"
    loaded = load_model(make_source(path), allow_pickle=True, workdir=tmp_path)
    x = torch.randn(3, 4)
    torch.testing.assert_close(loaded(x), module(x))


def test_tiny_lm_is_causal() -> None:
    module, x = _lm()
    changed = x.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 256
    with torch.inference_mode():
        before, after = module(x), module(changed)
    assert before.shape == (2, 12, 256)
    torch.testing.assert_close(before[:, :7], after[:, :7], rtol=0, atol=0)
    assert not torch.allclose(before[:, 7], after[:, 7])


def test_tiny_cnn_shapes() -> None:
    module = tiny_cnn(num_classes=7, in_channels=1, width=4)
    assert module(torch.rand(5, 1, 20, 12)).shape == (5, 7)


@pytest.mark.parametrize("build", [_lm, _cnn], ids=["lm", "cnn"])
def test_zoo_models_script_without_example_input(tmp_path: Path, build: object) -> None:
    module, x = build()  # type: ignore[operator]
    path = tmp_path / "scripted.pt"
    save_checkpoint(module, path, "torchscript")
    loaded = load_model(make_source(path))
    torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


def test_export_needs_an_example_input(tmp_path: Path) -> None:
    module, _ = _cnn()
    with pytest.raises(ValueError, match="example_input"):
        save_checkpoint(module, tmp_path / "m.pt2", "export")


# ---------------------------------------------------------------- the format registry


def test_builtin_formats_and_their_declared_properties() -> None:
    assert set(FORMATS) == {"safetensors", "state_dict", "export", "torchscript", "pickle"}
    assert {e.name for e in REGISTRY if e.needs_factory} == {"safetensors", "state_dict"}
    assert [e.name for e in REGISTRY if not e.safe_without_opt_in] == ["pickle"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_detection_picks_the_entry_that_saved_the_file(tmp_path: Path, fmt: str) -> None:
    module, x = _cnn()
    path = _save(tmp_path, fmt, module, x)
    assert REGISTRY.detect(path) is REGISTRY.get(fmt)
    # Detection order: every entry tried before the winner says no to this file.
    probe = Probe(path)
    earlier = REGISTRY.names()[: REGISTRY.names().index(fmt)]
    assert not [name for name in earlier if REGISTRY.get(name).detect(probe)]
    assert REGISTRY.get(fmt).fingerprint(path) == sha256_file(path)


def test_torchscript_is_tried_before_torch_save_zip(tmp_path: Path) -> None:
    # A TorchScript archive is also a torch.save-style zip (it has a data.pkl): order decides.
    module, x = _cnn()
    path = _save(tmp_path, "torchscript", module, x)
    assert Probe(path).is_torch_save()
    names = REGISTRY.names()
    assert names.index("export") < names.index("torchscript") < names.index("state_dict")
    assert names.index("safetensors") < names.index("pickle")


def _format_choices() -> tuple[str, ...]:
    def sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        found: argparse.ArgumentParser = action.choices[name]
        return found

    add = sub(sub(build_parser(), "runs"), "add")
    option = next(a for a in add._actions if "--format" in a.option_strings)
    assert option.choices is not None
    return tuple(option.choices)


def test_format_choices_come_from_the_registry() -> None:
    assert _format_choices() == REGISTRY.names()


def test_unknown_format_names_are_refused(tmp_path: Path) -> None:
    module, x = _cnn()
    path = _save(tmp_path, "safetensors", module, x)
    with pytest.raises(ModelLoadError) as exc:
        make_source(path, factory=CNN_FACTORY, format="onnx")
    assert _one_line(exc) == (
        f"unknown checkpoint format 'onnx'; use one of {', '.join(REGISTRY.names())}"
    )
    with pytest.raises(ValidationError, match="unknown checkpoint format 'onnx'"):
        ModelSource(checkpoint=str(path), format="onnx", sha256="0" * 64)
    with pytest.raises(ValueError, match="already registered"):
        FormatRegistry(REGISTRY).register(REGISTRY.get("pickle"))


def test_registry_module_does_not_import_torch() -> None:
    code = "import sys, regress_action.formats; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


class NpzWeights(FormatEntry):
    """A throwaway format: weights in a NumPy .npz (a zip of .npy members), for a factory."""

    name = "npz_weights"
    needs_factory = True

    def detect(self, probe: Probe) -> bool:
        names = probe.zip_names()
        return bool(names) and all(n.endswith(".npy") for n in names)

    def load(self, path: Path, context: LoadContext) -> nn.Module:
        with np.load(path, allow_pickle=False) as archive:
            state = {k: torch.from_numpy(archive[k]) for k in archive.files}
        return context.with_weights(state)

    def save(self, module: nn.Module, path: Path, example_input: torch.Tensor | None) -> None:
        with path.open("wb") as handle:
            np.savez(handle, **{k: v.detach().numpy() for k, v in module.state_dict().items()})


class UnsafeNpzWeights(NpzWeights):
    name = "unsafe_npz_weights"
    safe_without_opt_in = False


@pytest.fixture
def npz_format() -> Iterator[FormatEntry]:
    entry = REGISTRY.register(NpzWeights())
    try:
        yield entry
    finally:
        REGISTRY.unregister(entry.name)


def test_a_new_format_is_one_registered_entry(tmp_path: Path, npz_format: FormatEntry) -> None:
    module, x = _cnn()
    path = tmp_path / "weights.npz"
    save_checkpoint(module, path, "npz_weights")
    assert detect_format(path) == "npz_weights"
    assert _format_choices()[-1] == "npz_weights"
    source = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    assert (source.format, source.sha256) == ("npz_weights", sha256_file(path))
    loaded = load_model(source)
    torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)
    with pytest.raises(ModelLoadError, match=r"holds only weights \(npz_weights\)"):
        make_source(path)


def test_an_unregistered_format_is_unknown_again(tmp_path: Path) -> None:
    module, _ = _cnn()
    path = tmp_path / "weights.npz"
    NpzWeights().save(module, path, None)
    with pytest.raises(ModelLoadError, match=r"a zip archive that is neither torch\.save"):
        detect_format(path)
    entry = REGISTRY.register(NpzWeights())
    try:
        source = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 4})
    finally:
        REGISTRY.unregister(entry.name)
    assert "npz_weights" not in REGISTRY.names()
    with pytest.raises(ValidationError, match="unknown checkpoint format 'npz_weights'"):
        ModelSource.model_validate(source.model_dump())


def test_a_new_unsafe_format_needs_the_opt_in(tmp_path: Path) -> None:
    module, x = _cnn()
    path = tmp_path / "weights.npz"
    NpzWeights().save(module, path, None)
    registry = FormatRegistry(REGISTRY)
    registry.register(UnsafeNpzWeights(), before="export")
    assert registry.names()[0] == "unsafe_npz_weights"
    assert registry.detect(path).name == "unsafe_npz_weights"
    entry = REGISTRY.register(UnsafeNpzWeights())
    try:
        source = make_source(path, factory=CNN_FACTORY, factory_kwargs={"width": 4})
        with pytest.raises(ModelLoadError) as exc:
            load_model(source)
        assert _one_line(exc) == (
            f"checkpoint {path} (unsafe_npz_weights) can run arbitrary code when loaded; "
            "re-save it as safetensors, or pass --allow-pickle if you trust it"
        )
        torch.testing.assert_close(load_model(source, allow_pickle=True)(x), module(x))
    finally:
        REGISTRY.unregister(entry.name)
