"""Checkpoints: locations (s3://, models/ names), safety, config/weights disagreement, registry.

Save -> load round trips (local and memory://), torch_dtype and mismatched keys are checked for
every family by tests/model_tester.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from safetensors.torch import save_file

import latentflow as lf
from latentflow.auto import _MODELS


def tiny_vae():
    torch.manual_seed(0)
    return lf.VariationalAutoencoderModel(lf.VariationalAutoencoderConfig(block_out_channels=(8, 16), norm_num_groups=4)).eval()


def test_s3_roundtrip_never_stores_credentials(s3):
    bucket, options = s3
    model = tiny_vae()
    model.save_pretrained(f"{bucket}/models/vae", storage_options=options)
    loaded = lf.VariationalAutoencoderModel.from_pretrained(f"{bucket}/models/vae", storage_options=options)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    config_text = fs.cat(f"{bucket}/models/vae/config.json").decode()
    assert "testing" not in config_text and "endpoint" not in config_text


def test_models_dir_name(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTFLOW_MODELS_DIR", str(tmp_path))
    tiny_vae().save_pretrained(tmp_path / "tiny-vae")
    assert isinstance(lf.AutoModel.from_pretrained("tiny-vae"), lf.VariationalAutoencoderModel)
    with pytest.raises(lf.CheckpointError, match="available: \\['tiny-vae'\\]"):
        lf.AutoModel.from_pretrained("no-such-model")


def test_pickles_are_refused(tmp_path):
    model = tiny_vae()
    model.config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(lf.CheckpointError, match="never unpickles"):
        lf.AutoModel.from_pretrained(str(tmp_path))
    import fsspec

    from latentflow import hub

    with pytest.raises(lf.CheckpointError, match="refusing to unpickle"):
        hub.read_safetensors(fsspec.filesystem("file"), str(tmp_path / "pytorch_model.bin"))


def test_checkpoint_whose_config_disagrees_with_weights(tmp_path):
    tiny_vae().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["latent_channels"] = 8
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(lf.CheckpointError, match="shape mismatches \\['decoder.conv_in.weight: checkpoint"):
        lf.AutoModel.from_pretrained(str(tmp_path))


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    tiny_vae().save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(lf.CheckpointError, match="not a valid safetensors file"):
        lf.AutoModel.from_pretrained(str(tmp_path))


def test_config_overrides_on_load_are_validated(tmp_path):
    tiny_vae().save_pretrained(tmp_path)
    loaded = lf.AutoModel.from_pretrained(str(tmp_path), scaling_factor=0.5)
    assert loaded.config.scaling_factor == 0.5
    with pytest.raises(lf.ConfigError, match="unknown key 'scale'"):
        lf.AutoModel.from_pretrained(str(tmp_path), scale=0.5)


def test_unknown_model_type_names_registered_ones():
    with pytest.raises(lf.ConfigError, match="unknown model_type 'nope'; registered: .*'vae'"):
        lf.AutoConfig.from_dict({"model_type": "nope"})


def test_register_third_party_model(tmp_path):
    @dataclass
    class IdentityConfig(lf.LatentConfig):
        model_type: ClassVar[str] = "identity_test"
        in_channels: int = 3

    @lf.register
    class IdentityModel(lf.LatentModel):
        config_class = IdentityConfig

        def __init__(self, config):
            super().__init__(config)
            self.scale = torch.nn.Parameter(torch.ones(()))

        def encode(self, x):
            self.check_input(x)
            return lf.EncoderOutput(latents=x * self.scale)

        def decode(self, latents):
            return lf.DecoderOutput(sample=latents / self.scale)

    try:
        model = lf.AutoModel.from_config({"model_type": "identity_test"})
        model.save_pretrained(tmp_path)
        loaded = lf.AutoModel.from_pretrained(str(tmp_path))
        assert isinstance(loaded, IdentityModel)
        x = torch.rand(1, 3, 4, 4)
        assert torch.equal(loaded.reconstruct(x), x)
    finally:
        _MODELS.pop("identity_test", None)


def test_loading_adopts_the_weights_without_random_init_and_matches_a_normal_build(tmp_path):
    model = tiny_vae()
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}  # an fp16 checkpoint
    save_file(half, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    rng = torch.get_rng_state()
    loaded = lf.AutoModel.from_pretrained(str(tmp_path))
    assert torch.equal(rng, torch.get_rng_state())  # no random initialization ran
    normal = lf.VariationalAutoencoderModel.from_state_dict(model.config, half)  # build + copy
    for (name, a), (_, b) in zip(loaded.state_dict().items(), normal.state_dict().items()):
        assert a.dtype == b.dtype and a.device.type == "cpu" and torch.equal(a, b), name  # cast like a copy would
    assert all(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.equal(loaded.encode(x).latents, normal.encode(x).latents)


def test_models_with_computed_buffers_or_tied_weights_are_built_normally():
    fsq = lf.AutoModel.from_pretrained("fsq-f8")  # FSQ's levels/basis buffers are computed, not stored
    assert type(fsq)._adopt(fsq.config, fsq.state_dict()) is None
    assert all(not t.is_meta for t in [*fsq.parameters(), *fsq.buffers()])

    class Tied(lf.VariationalAutoencoderModel):
        def __init__(self, config):
            super().__init__(config)
            self.extra = self.encoder  # the same modules reached twice: their weights are tied
    tied = Tied(tiny_vae().config)
    assert Tied._adopt(tied.config, tied.state_dict()) is None
