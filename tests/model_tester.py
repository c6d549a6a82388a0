"""``LatentModelTesterMixin``: the whole ``LatentModel`` contract, checked the same way for every family.

In the shape of diffusers' ``ModelTesterMixin``: a family's test class names the model class,
gives a tiny ``get_init_dict()`` and its input shape, and inherits every check::

    class TestVAE(LatentModelTesterMixin):
        model_class = lf.VariationalAutoencoderModel
        encoder_output_class = lf.VariationalEncoderOutput
        loss_terms = {"rec", "kl", "elbo_nats"}

        def get_init_dict(self):
            return {"block_out_channels": [8, 16], "norm_num_groups": 4, "latent_channels": 4}

What it checks: the encode output dataclass; ``latent_shape(h, w)`` equals the encoded shape
at every size the family takes; decode restores the input shape; ``forward`` returns a finite
scalar ``loss`` that follows the one loss convention (:class:`~latentflow.outputs.AutoencoderOutput`)
and named ``losses``; save_pretrained -> from_pretrained (and through ``AutoModel``) gives equal
outputs after training steps moved the state; ``torch_dtype`` float16/bfloat16 loads and runs;
a mismatched checkpoint names its keys; bad input is a clear :class:`InputError`.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import latentflow as lf
from latentflow.outputs import AutoencoderOutput, DecoderOutput, EncoderOutput

_memory_ids = itertools.count()


class LatentModelTesterMixin:
    """Every ``LatentModel`` family's contract. Subclasses set the class attributes and ``get_init_dict``.

    Class attributes:
        model_class: the family's model class.
        encoder_output_class: the dataclass ``encode`` returns.
        input_shape: (B, C, H, W) of the test input.
        other_sizes: further (H, W) the family takes (checked for shapes and save/load equality).
        expected_latent_shape: per-sample latent shape at ``input_shape``, written out by hand.
        loss_terms: the exact keys of ``forward(x).losses``.
    """

    model_class: ClassVar[type]
    encoder_output_class: ClassVar[type] = EncoderOutput
    input_shape: ClassVar[tuple[int, ...]] = (2, 3, 16, 16)
    other_sizes: ClassVar[tuple[tuple[int, int], ...]] = ()
    expected_latent_shape: ClassVar[tuple[int, ...] | None] = None
    loss_terms: ClassVar[set[str]] = {"rec"}

    # ---- what a family gives -----------------------------------------------------------
    def get_init_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def forward_kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make ``forward`` deterministic (a generator, a mask noise)."""
        return {}

    def expected_loss(self, model, x: torch.Tensor, out: AutoencoderOutput) -> torch.Tensor:
        """``loss`` by the convention: ``rec`` plus each other term times its config weight."""
        return out.losses["rec"]

    def expected_rec(self, model, x: torch.Tensor, out: AutoencoderOutput) -> torch.Tensor:
        """The reconstruction loss the config names, averaged over every element."""
        kind = getattr(model.config, "reconstruction_loss", "l1")
        return F.mse_loss(out.reconstruction, x) if kind == "mse" else F.l1_loss(out.reconstruction, x)

    # ---- helpers -------------------------------------------------------------------------
    def build(self, **overrides: Any):
        torch.manual_seed(0)
        config = self.model_class.config_class.from_dict({**self.get_init_dict(), **overrides})
        return self.model_class(config).eval()

    def inputs(self, size: tuple[int, int] | None = None, seed: int = 0) -> torch.Tensor:
        b, c, h, w = self.input_shape
        h, w = size or (h, w)
        return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def sizes(self) -> list[tuple[int, int]]:
        return [tuple(self.input_shape[2:]), *self.other_sizes]

    def trained(self):
        """A model whose state moved: two training-mode forwards (EMA codebooks, step counters)."""
        model = self.build().train()
        with torch.no_grad():
            for seed in (1, 2):
                model(self.inputs(seed=seed), **self.forward_kwargs())
        return model.eval()

    def assert_same_outputs(self, a, b, sizes: list[tuple[int, int]] | None = None) -> None:
        for size in sizes or self.sizes():
            x = self.inputs(size, seed=5)
            with torch.no_grad():
                assert torch.equal(a.encode(x).latents, b.encode(x).latents), size
                assert torch.equal(a.reconstruct(x), b.reconstruct(x)), size
                if a.latent_kind == "discrete":
                    ta, tb = a.tokenize(x), b.tokenize(x)
                    pairs = zip(dataclasses.astuple(ta), dataclasses.astuple(tb)) if dataclasses.is_dataclass(ta) else [(ta, tb)]
                    assert all(torch.equal(p, q) for p, q in pairs), size

    # ---- the contract ----------------------------------------------------------------------
    def test_encode_returns_the_family_output(self):
        model = self.build()
        with torch.no_grad():
            enc = model.encode(self.inputs())
        assert type(enc) is self.encoder_output_class
        assert isinstance(enc.latents, torch.Tensor) and torch.isfinite(enc.latents).all()

    def test_latent_shape_is_the_encoded_shape_and_decode_restores_the_input(self):
        model = self.build()
        if self.expected_latent_shape is not None:
            assert model.latent_shape(*self.input_shape[2:]) == self.expected_latent_shape
        for size in self.sizes():
            x = self.inputs(size)
            with torch.no_grad():
                latents = model.encode(x).latents
                assert tuple(latents.shape) == (x.shape[0], *model.latent_shape(*size)), size
                dec = model.decode(latents)
                assert type(dec) is DecoderOutput and dec.sample.shape == x.shape, size
                assert model.reconstruct(x).shape == x.shape

    def test_forward_loss_follows_the_convention(self):
        model = self.build().train()
        x = self.inputs()
        out = model(x, **self.forward_kwargs())
        assert isinstance(out, AutoencoderOutput) and out.reconstruction.shape == x.shape
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert set(out.losses) == self.loss_terms
        assert all(v.ndim == 0 and torch.isfinite(v) for v in out.losses.values()), out.losses
        torch.testing.assert_close(out.losses["rec"], self.expected_rec(model, x, out))
        torch.testing.assert_close(out.loss, self.expected_loss(model, x, out))
        out.loss.backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not no_grad, f"parameters the loss does not reach: {no_grad}"

    def test_save_pretrained_from_pretrained_gives_equal_outputs(self, tmp_path):
        model = self.trained()
        model.save_pretrained(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
        loaded = self.model_class.from_pretrained(str(tmp_path))
        assert type(loaded) is self.model_class and loaded.config == model.config and not loaded.training
        assert loaded.weights_hash() == loaded.weights_sha256 and len(loaded.weights_sha256) == 64
        self.assert_same_outputs(model, loaded)

    def test_auto_model_round_trip(self):
        model = self.trained()
        url = f"memory://model-tester/{self.model_class.__name__}-{next(_memory_ids)}"
        model.save_pretrained(url)
        loaded = lf.AutoModel.from_pretrained(url)
        assert type(loaded) is self.model_class and loaded.config == model.config
        self.assert_same_outputs(model, loaded, sizes=self.sizes()[:1])
        assert lf.AutoConfig.from_dict(model.config.to_dict()) == model.config
        assert type(lf.AutoModel.from_config(model.config.to_dict())) is self.model_class

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_torch_dtype_loads_and_runs(self, dtype, tmp_path):
        self.build().save_pretrained(tmp_path)
        model = self.model_class.from_pretrained(str(tmp_path), torch_dtype=dtype)
        quantizer_state = {id(t) for m in model.modules() if isinstance(m, lf.Quantizer) for t in m.parameters()}
        assert {p.dtype for p in model.parameters() if id(p) not in quantizer_state} == {dtype}
        assert all(p.dtype == torch.float32 for p in model.parameters() if id(p) in quantizer_state)  # fp32 math
        x = self.inputs().to(dtype)
        with torch.no_grad():
            latents = model.encode(x).latents
            sample = model.decode(latents).sample
        assert sample.dtype == dtype and sample.shape == x.shape and torch.isfinite(sample).all()
        with pytest.raises(lf.ConfigError, match="torch_dtype must be a floating torch.dtype"):
            self.model_class.from_pretrained(str(tmp_path), torch_dtype=torch.int8)

    def test_mismatched_checkpoint_names_its_keys(self, tmp_path):
        model = self.build()
        model.save_pretrained(tmp_path)
        state = dict(model.state_dict())
        first, second = sorted(k for k, v in state.items() if v.ndim > 0)[:2]
        state[first + "_renamed"] = state.pop(first)
        state[second] = torch.zeros(*state[second].shape, 2)
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
        with pytest.raises(lf.CheckpointError) as err:
            self.model_class.from_pretrained(str(tmp_path))
        msg = str(err.value)
        assert f"missing keys ['{first}']" in msg and f"unexpected keys ['{first}_renamed']" in msg
        assert f"shape mismatches ['{second}: checkpoint" in msg

    def test_bad_input_is_a_clear_error(self):
        model = self.build()
        b, c, h, w = self.input_shape
        with pytest.raises(lf.InputError, match=f"expects {c} input channels, got: {c + 1}"):
            model.encode(torch.rand(b, c + 1, h, w))
        with pytest.raises(lf.InputError, match="rank-4 input.*got rank 3"):
            model.encode(torch.rand(c, h, w))
