"""Checkpoint loading: official format, safetensors, directories, hub ids; strictness and safety."""

from __future__ import annotations

import json
import os
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from moge2_ros.checkpoints import load_model, read_checkpoint, save_checkpoint
from moge2_ros.errors import ModelLoadError
from moge2_ros.model import MoGe2Config, MoGe2Model


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_model, tmp_path_factory) -> Path:
    """The suite's tiny_model as written by save_checkpoint: model_config and model, nothing else."""
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "model.pt")


def _outputs(model: MoGe2Model) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.rand(1, 3, 42, 56), 12)


@pytest.mark.parity
def test_loads_official_reference_checkpoint(reference_dir):
    model = load_model(reference_dir / "model.pt")
    assert isinstance(model, MoGe2Model) and not model.training
    assert model.dtype == torch.float32
    raw = torch.load(reference_dir / "model.pt", map_location="cpu", weights_only=True)
    # buffers come from the checkpoint (fp16-rounded there), not hard-coded ImageNet constants
    stored = raw["model"]["encoder.image_mean"]
    assert stored.dtype == torch.float16
    assert torch.equal(model.encoder.image_mean, stored.float())
    assert model.encoder.image_mean.flatten()[0].item() != torch.tensor(0.485).item()
    assert MoGe2Config.from_dict(raw["model_config"]).to_dict() == raw["model_config"]


def test_save_and_load_round_trip(tiny_ckpt, tmp_path):
    data = torch.load(tiny_ckpt, weights_only=True)
    assert set(data) == {"model_config", "model"}
    model = load_model(tiny_ckpt)
    again = load_model(save_checkpoint(model, tmp_path / "again.pt"))
    for k, v in _outputs(model).items():
        torch.testing.assert_close(_outputs(again)[k], v, rtol=0, atol=0)


def test_safetensors_and_directory_sources(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    st = save_checkpoint(model, tmp_path / "st" / "model.safetensors")
    from_st = load_model(st)
    from_dir = load_model(st.parent)
    ref = _outputs(model)
    for m in (from_st, from_dir):
        for k, v in _outputs(m).items():
            torch.testing.assert_close(v, ref[k], rtol=0, atol=0)


def test_safetensors_with_config_json_beside(tiny_ckpt, tmp_path):
    from safetensors.torch import save_file

    model = load_model(tiny_ckpt)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(ModelLoadError, match="no model_config"):
        load_model(tmp_path / "weights.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    assert isinstance(load_model(tmp_path / "weights.safetensors"), MoGe2Model)


def test_official_from_pretrained_loads_strictly(tiny_ckpt, tmp_path):
    """``moge2_ros.MoGeModel.from_pretrained`` (the official entry point) is load_model: same weights, strict keys."""
    import moge2_ros

    model = moge2_ros.MoGeModel.from_pretrained(tiny_ckpt)
    assert isinstance(model, MoGe2Model) and not model.training and issubclass(moge2_ros.MoGeModel, MoGe2Model)
    reference = load_model(tiny_ckpt)
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items())
    assert moge2_ros.MoGeModel.from_pretrained(str(tiny_ckpt.parent), device="cpu").device.type == "cpu"

    def add_key(d):
        d["model"]["encoder.extra"] = torch.zeros(1)

    with pytest.raises(ModelLoadError, match="unexpected keys: encoder.extra"):
        moge2_ros.MoGeModel.from_pretrained(_rewrite(tiny_ckpt, tmp_path, add_key))


def _rewrite(tiny_ckpt: Path, tmp_path: Path, edit) -> Path:
    data = torch.load(tiny_ckpt, weights_only=True)
    edit(data)
    out = tmp_path / "edited.pt"
    torch.save(data, out)
    return out


def test_renamed_key_is_rejected_by_name(tiny_ckpt, tmp_path):
    def rename(d):
        d["model"]["neck.input_blocks.0.weights"] = d["model"].pop("neck.input_blocks.0.weight")

    with pytest.raises(ModelLoadError) as err:
        load_model(_rewrite(tiny_ckpt, tmp_path, rename))
    msg = str(err.value)
    assert "missing keys: neck.input_blocks.0.weight" in msg
    assert "unexpected keys: neck.input_blocks.0.weights" in msg


def test_shape_mismatch_is_rejected(tiny_ckpt, tmp_path):
    def grow(d):
        d["model"]["scale_head.0.bias"] = torch.zeros(7)

    with pytest.raises(ModelLoadError, match=r"shape mismatch: scale_head\.0\.bias \(checkpoint \(7,\)"):
        load_model(_rewrite(tiny_ckpt, tmp_path, grow))


def test_bad_model_config_is_reported(tiny_ckpt, tmp_path):
    def bad(d):
        d["model_config"]["remap_output"] = "cubic"

    with pytest.raises(ModelLoadError, match="invalid model_config: remap_output"):
        load_model(_rewrite(tiny_ckpt, tmp_path, bad))


def test_truncated_file_gives_clear_error(tiny_ckpt, tmp_path):
    truncated = tmp_path / "truncated.pt"
    blob = tiny_ckpt.read_bytes()
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ModelLoadError, match="not a readable PyTorch checkpoint .*truncated, corrupt"):
        load_model(truncated)


def test_empty_and_foreign_files(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a model checkpoint — an empty file"):
        load_model(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelLoadError, match="not a model checkpoint — a text file"):
        load_model(text)
    bare = tmp_path / "bare.pt"
    torch.save({"w": torch.zeros(2)}, bare)
    with pytest.raises(ModelLoadError, match="bare state dict"):
        load_model(bare)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 10)
    with pytest.raises(ModelLoadError, match="safetensors"):
        load_model(bad_st)


class _Exploit:
    """Unpickling this would call os.system — weights_only loading must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tiny_ckpt, tmp_path):
    marker = tmp_path / "pwned"
    data = torch.load(tiny_ckpt, weights_only=True)
    data["payload"] = _Exploit(marker)
    evil = tmp_path / "evil.pt"
    torch.save(data, evil)
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_model(evil)
    assert not marker.exists(), "the payload ran"


def test_missing_path_and_hub_id_offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE and an empty cache: a fast, whole message, and the Hub is never contacted."""
    import moge2_ros.checkpoints as checkpoints

    with pytest.raises(ModelLoadError, match="no such model file"):
        load_model(tmp_path / "nope.pt")
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(checkpoints, "_hub_reachable", lambda *a, **k: pytest.fail("contacted the network"))
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError) as err:
        load_model("Ruicheng/moge-2-vitl-normal")
    assert time.perf_counter() - t0 < 5
    message = str(err.value)
    assert message.startswith("'Ruicheng/moge-2-vitl-normal': model.pt is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE is set" in message and message.endswith("that holds it.") and "..." not in message


def test_hub_id_unreachable_fails_fast_without_retries(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE, nothing cached, no network (simulated): one short check, then a whole message."""
    import moge2_ros.checkpoints as checkpoints

    calls = []
    fake = type(sys)("huggingface_hub")

    def hf_hub_download(repo_id, filename, local_files_only=False, **kwargs):
        calls.append(local_files_only)
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        pytest.fail("downloaded although the Hub is unreachable")

    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(checkpoints, "_hub_reachable", lambda *a, **k: False)
    with pytest.raises(ModelLoadError, match=r"not in the local Hugging Face cache and the Hub \(.*\) cannot be "
                                             r"reached \(offline\?\)\. Download model.pt") as err:
        load_model("someone/some-model")
    assert calls == [True] and str(err.value).endswith("that holds it.")


def test_hub_reachable_uses_one_short_connection(monkeypatch):
    import socket

    import moge2_ros.checkpoints as checkpoints

    seen = []

    def refuse(address, timeout=None):
        seen.append((address, timeout))
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example:8443")
    assert checkpoints._hub_reachable() is False
    assert seen == [(("hub.example", 8443), 3.0)]


def test_hub_error_message_is_not_cut_mid_word(monkeypatch):
    import moge2_ros.checkpoints as checkpoints

    fake = type(sys)("huggingface_hub")

    def hf_hub_download(repo_id, filename, local_files_only=False, **kwargs):
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        raise RuntimeError("Repository Not Found for url: https://huggingface.co/x/y/resolve/main/model.pt. " * 8)

    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(checkpoints, "_hub_reachable", lambda *a, **k: True)
    with pytest.raises(ModelLoadError) as err:
        load_model("x/y")
    message = str(err.value)
    assert "RuntimeError: Repository Not Found for url:" in message and message.endswith("that holds it.")
    quoted = message.split("RuntimeError: ", 1)[1].split(")", 1)[0]
    assert quoted.endswith(" ...") and quoted[:-4].split(" ")[-1] in ("Repository", "Not", "Found", "for", "url:",
                                                                       "https://huggingface.co/x/y/resolve/main/model.pt.")


def test_hub_id_resolves_through_hf_hub_download(tiny_ckpt, monkeypatch):
    """The hub path looks in the cache first (hf_hub_download local_files_only) and loads the file it returns."""
    calls = []
    fake = type(sys)("huggingface_hub")

    def hf_hub_download(repo_id, filename, local_files_only=False):
        calls.append((repo_id, filename, local_files_only))
        return str(tiny_ckpt)

    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    model = load_model("someone/some-model")
    assert calls == [("someone/some-model", "model.pt", True)] and isinstance(model, MoGe2Model)


def test_hub_id_downloads_when_not_cached(tiny_ckpt, monkeypatch):
    import moge2_ros.checkpoints as checkpoints

    calls = []
    fake = type(sys)("huggingface_hub")

    def hf_hub_download(repo_id, filename, local_files_only=False):
        calls.append(local_files_only)
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        return str(tiny_ckpt)

    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(checkpoints, "_hub_reachable", lambda *a, **k: True)
    assert isinstance(load_model("someone/some-model"), MoGe2Model) and calls == [True, False]


def test_text_file_is_not_called_a_pickle(tmp_path):
    """`--model README.md`: a text file, said plainly (not "could run arbitrary code")."""
    readme = tmp_path / "README.md"
    readme.write_text("# moge2_ros\n\nMonocular metric geometry.\n")
    with pytest.raises(ModelLoadError) as err:
        load_model(readme)
    message = str(err.value)
    assert "not a model checkpoint — a text file (it starts with '# moge2_ros')" in message
    assert "arbitrary code" not in message and "pickle" not in message


def test_unknown_binary_file_is_not_a_checkpoint(tmp_path):
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x07\x12\x07pytorch" + bytes(range(256)))
    with pytest.raises(ModelLoadError, match="not a model checkpoint — not a file format this loader knows"):
        load_model(onnx_like)


def test_raw_pickle_gives_one_error_and_no_warning(tmp_path, recwarn):
    """A pickle.dump'ed .pt: torch warns about the protocol; that warning is folded into the one error."""
    import pickle

    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model_config": {}, "model": {"w": [1.0, 2.0]}}, protocol=4))
    with pytest.raises(ModelLoadError) as err:
        load_model(raw)
    message = str(err.value)
    assert "not a model checkpoint — a plain Python pickle, not a torch.save archive" in message
    assert "torch also warned: Detected pickle protocol 4" in message
    assert len(recwarn) == 0, [str(w.message) for w in recwarn]
    assert "\n" not in message


def test_raw_pickle_from_the_cli_prints_one_line(tmp_path):
    import pickle
    import subprocess

    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"model": [1, 2]}, protocol=4))
    proc = subprocess.run([sys.executable, "-c", "import sys\nfrom moge2_ros.checkpoints import load_model\n"
                           "from moge2_ros.errors import ModelLoadError\ntry:\n    load_model(sys.argv[1])\n"
                           "except ModelLoadError as e:\n    print(e, file=sys.stderr)", str(raw)],
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "plain Python pickle" in lines[0], proc.stderr


def test_safetensors_content_is_recognised_whatever_the_name(tiny_ckpt, tmp_path):
    model = load_model(tiny_ckpt)
    st = save_checkpoint(model, tmp_path / "model.safetensors")
    renamed = tmp_path / "weights.bin"
    renamed.write_bytes(st.read_bytes())
    assert isinstance(load_model(renamed), MoGe2Model)


def test_deflate_and_stored_zip_entries_both_load(tiny_ckpt, tmp_path):
    """Official checkpoints use stored zip entries, the parity files deflate: both must read."""
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(tiny_ckpt) as src, zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    cfg, sd = read_checkpoint(deflated)
    cfg2, sd2 = read_checkpoint(tiny_ckpt)
    assert cfg == cfg2 and all(torch.equal(sd[k], sd2[k]) for k in sd2)


def test_save_is_atomic(tiny_ckpt, tmp_path, monkeypatch):
    model = load_model(tiny_ckpt)
    target = tmp_path / "out.pt"
    target.write_bytes(b"previous")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(model, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]
