"""The shared quantizer suite (every family plugs in) plus family-specific checks on hand-built values."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from latentflow.errors import CheckpointError, ConfigError, InputError
from latentflow.quantizers import index_dtype_for, numpy_index_dtype_for, quantizer_from_config, usage_and_perplexity
from latentflow.quantizers.vq import rotate_onto

LAYOUTS = {"image": (2, None, 4, 4), "video": (2, None, 2, 3, 3), "sequence": (2, 6, None)}


def make_input(dim: int, layout: str, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    shape = tuple(dim if s is None else s for s in LAYOUTS[layout])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def state_snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class QuantizerTests:
    """Properties every quantizer must have. Subclasses set ``config`` (the JSON form)."""

    config: dict = {}
    updates_state = False  # EMA counts, codebooks or step counters move in train mode
    codes_invertible = True  # codes_to_indices(indices_to_codes(i)) == i

    def make(self):
        torch.manual_seed(0)
        return quantizer_from_config(copy.deepcopy(self.config))

    def test_config_json_round_trip(self):
        q = self.make()
        config = json.loads(json.dumps(q.to_config()))
        assert config["name"] == self.config["name"]
        assert quantizer_from_config(config).to_config() == q.to_config()

    @pytest.mark.parametrize("layout", list(LAYOUTS))
    def test_indices_to_codes_is_exact(self, layout):
        q = self.make()
        q.train()(make_input(q.dim, layout, seed=1))  # a training step first: state moves, inverse still exact
        q.eval()
        x = make_input(q.dim, layout)
        out = q(x)
        spatial = x.shape[:-1] if layout == "sequence" else (x.shape[0], *x.shape[2:])
        assert out.indices.shape == (*spatial, *((q.num_levels,) if q.num_levels > 1 else ()))
        assert out.quantized.shape == x.shape
        assert torch.equal(q.indices_to_codes(out.indices), out.quantized)
        if self.codes_invertible:  # compare codes: duplicate code vectors may swap indices
            assert torch.equal(q.indices_to_codes(q.codes_to_indices(out.quantized)), out.quantized)

    def test_gradients_reach_input(self):
        q = self.make().train()
        x = make_input(q.dim, "image").requires_grad_(True)
        out = q(x)
        weights = torch.randn(out.quantized.shape, generator=torch.Generator().manual_seed(3))
        ((out.quantized * weights).sum() + out.loss).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0

    def test_state_moves_in_train_mode_only(self):
        q = self.make()
        before = state_snapshot(q)
        with torch.no_grad():
            q.eval()(make_input(q.dim, "image"))
        assert all(torch.equal(before[k], v) for k, v in q.state_dict().items()), "eval forward changed state"
        q.train()(make_input(q.dim, "image"))
        changed = [k for k, v in q.state_dict().items() if not torch.equal(before[k], v)]
        assert bool(changed) == self.updates_state, changed

    def test_save_pretrained_round_trip(self, tmp_path):
        """The checkpoint path models and priors use: config.json + model.safetensors, strict."""
        q = self.make().train()
        for seed in range(3):
            q(make_input(q.dim, "image", seed=seed))
        q.save_pretrained(tmp_path)
        assert json.loads((tmp_path / "config.json").read_text())["name"] == self.config["name"]
        fresh = type(q).from_pretrained(str(tmp_path))
        assert fresh.to_config() == q.to_config() and not fresh.training
        x = make_input(q.dim, "video", seed=9)
        a, b = q.eval()(x), fresh(x)
        assert torch.equal(a.quantized, b.quantized) and torch.equal(a.indices, b.indices)
        if q.state_dict():  # a renamed key is named
            state = dict(q.state_dict())
            key = sorted(state)[0]
            state[key + "_renamed"] = state.pop(key)
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
            with pytest.raises(CheckpointError, match=f"missing keys \\['{key}'\\]"):
                type(q).from_pretrained(str(tmp_path))

    def test_casting_the_model_to_half_keeps_fp32_state(self):
        """``model.to(float16)`` / ``torch_dtype=`` leave the quantizer's fp32 math as it was."""
        q = self.make().eval()
        x = make_input(q.dim, "image").to(torch.bfloat16)
        before = q(x)
        q.to(torch.float16)
        assert all(t.dtype == torch.float32 for t in [*q.parameters(), *q.buffers()] if t.is_floating_point())
        after = q(x)
        assert after.quantized.dtype == torch.bfloat16
        assert torch.equal(after.quantized, before.quantized) and torch.equal(after.indices, before.indices)

    def test_indices_fit_index_dtype(self):
        q = self.make().eval()
        out = q(make_input(q.dim, "image", scale=3.0))
        assert torch.equal(out.indices.to(q.index_dtype).long(), out.indices)
        assert q.index_dtype == index_dtype_for(q.codebook_size)
        assert q.numpy_index_dtype.itemsize == torch.empty((), dtype=q.index_dtype).element_size()
        assert 0 <= float(out.usage) <= 1 and 1 <= float(out.perplexity) <= q.codebook_size + 1e-3

    def test_bf16_autocast_keeps_codes(self):
        q = self.make().eval()
        x = make_input(q.dim, "image", scale=2.0)
        fp32 = q(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = q(x)
        assert torch.equal(bf16.indices, fp32.indices)
        assert float(bf16.usage) == float(fp32.usage)
        assert bf16.quantized.dtype == torch.float32

    def test_wrong_input_dimension_is_a_clear_error(self):
        q = self.make()
        with pytest.raises(InputError, match=f"expects {q.dim} features"):
            q(torch.randn(2, q.dim + 1, 4, 4))
        with pytest.raises(InputError, match="rank"):
            q(torch.randn(q.dim, 4))

    def test_out_of_range_indices_are_a_clear_error(self):
        q = self.make()
        shape = (2, 3, 3, q.num_levels) if q.num_levels > 1 else (2, 3, 3)
        with pytest.raises(InputError, match="indices must lie in"):
            q.indices_to_codes(torch.full(shape, q.codebook_size))


class TestVQ(QuantizerTests):
    config = {"name": "vq", "configuration": {"dim": 8, "codebook_size": 32}}
    updates_state = True  # EMA cluster sizes track usage even with the codebook loss


class TestVQStabilized(QuantizerTests):
    config = {"name": "vq", "configuration": {"dim": 8, "codebook_size": 32, "use_ema": True, "kmeans_init": True,
                                              "dead_code_threshold": 1.0, "rotation_trick": True}}
    updates_state = True


class TestVQCosineFactorized(QuantizerTests):
    config = {"name": "vq", "configuration": {"dim": 8, "codebook_size": 32, "codebook_dim": 4, "cosine": True}}
    updates_state = True


class TestFSQ(QuantizerTests):
    config = {"name": "fsq", "configuration": {"levels": [8, 5, 5, 5]}}


class TestFSQProjected(QuantizerTests):
    config = {"name": "fsq", "configuration": {"levels": [4, 3, 3], "dim": 8}}


class TestLFQ(QuantizerTests):
    config = {"name": "lfq", "configuration": {"dim": 8, "codebook_size": 256}}


class TestLFQProjected(QuantizerTests):
    config = {"name": "lfq", "configuration": {"dim": 8, "codebook_size": 64}}


class TestBSQ(QuantizerTests):
    config = {"name": "bsq", "configuration": {"dim": 8, "codebook_size": 64}}


class TestGumbel(QuantizerTests):
    config = {"name": "gumbel", "configuration": {"dim": 8, "codebook_size": 32, "hard": True}}
    updates_state = True  # the annealing step counter


class TestResidualVQ(QuantizerTests):
    config = {"name": "residual_vq", "configuration": {"dim": 8, "num_quantizers": 3, "vq": {"codebook_size": 16, "use_ema": True}}}
    updates_state = True
    codes_invertible = False  # greedy re-encoding of a sum need not pick the same levels


class TestGroupedVQ(QuantizerTests):
    config = {"name": "grouped_vq", "configuration": {"dim": 8, "groups": 2, "vq": {"codebook_size": 16, "use_ema": True}}}
    updates_state = True


# ---- hand-built values ---------------------------------------------------------------
def test_usage_and_perplexity_on_hand_built_histograms():
    usage, ppl = usage_and_perplexity(torch.tensor([[0, 0], [1, 1]]), 4)
    assert float(usage) == 0.5 and math.isclose(float(ppl), 2.0, rel_tol=1e-6)
    usage, ppl = usage_and_perplexity(torch.arange(8), 8)
    assert float(usage) == 1.0 and math.isclose(float(ppl), 8.0, rel_tol=1e-6)
    usage, ppl = usage_and_perplexity(torch.zeros(5, dtype=torch.long), 8)
    assert float(usage) == 1 / 8 and math.isclose(float(ppl), 1.0, rel_tol=1e-6)


def test_vq_usage_and_perplexity_from_forward():
    q = quantizer_from_config({"name": "vq", "configuration": {"dim": 2, "codebook_size": 4}}).eval()
    q.codebook.data = torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [5.0, -5.0]])
    x = torch.tensor([[[0.1, 0.0], [0.0, -0.2], [9.0, 10.0], [10.0, 11.0]]])  # (1, 4, 2)
    out = q(x)
    assert out.indices.tolist() == [[0, 0, 1, 1]]
    assert float(out.usage) == 0.5 and math.isclose(float(out.perplexity), 2.0, rel_tol=1e-6)


def test_fsq_index_convention_matches_the_reference_by_hand():
    # levels [3, 4]: basis (1, 3); half widths (1, 2); even level 4 has codes {-1, -.5, 0, .5}
    q = quantizer_from_config({"name": "fsq", "configuration": {"levels": [3, 4]}})
    assert q.codebook_size == 12
    x = torch.tensor([[[10.0, -0.6], [-10.0, -10.0], [10.0, 10.0], [0.0, 0.0]]])  # (1, 4, 2)
    out = q(x)
    # digits: (2, 1) -> 2 + 1*3 = 5; (0, 0) -> 0; (2, 3) -> 11; (1, 2) -> 1 + 2*3 = 7
    assert out.indices.tolist() == [[5, 0, 11, 7]]
    assert out.quantized.tolist() == [[[1.0, -0.5], [-1.0, -1.0], [1.0, 0.5], [0.0, 0.0]]]
    table = q.indices_to_codes(torch.arange(12).view(1, 12))  # (1, 12, 2)
    assert table[0, :4].tolist() == [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0], [-1.0, -0.5]]
    assert torch.equal(q.codes_to_indices(table), torch.arange(12).view(1, 12))


def test_lfq_bits_are_little_endian():
    q = quantizer_from_config({"name": "lfq", "configuration": {"dim": 3, "codebook_size": 8}})
    out = q(torch.tensor([[[0.7, -0.2, 1.5], [-1.0, -1.0, -1.0]]]))
    assert out.indices.tolist() == [[5, 0]]
    assert out.quantized.tolist() == [[[1.0, -1.0, 1.0], [-1.0, -1.0, -1.0]]]


def test_bsq_codes_are_unit_vectors():
    q = quantizer_from_config({"name": "bsq", "configuration": {"dim": 4, "codebook_size": 16}})
    codes = q.indices_to_codes(torch.arange(16).view(1, 16))
    assert torch.allclose(codes.norm(dim=-1), torch.ones(1, 16))


def test_rotation_trick_value_is_q_and_gradient_is_the_rotation():
    z = torch.tensor([[3.0, 4.0]], requires_grad=True)
    q = torch.tensor([[0.0, 10.0]])
    out = rotate_onto(z, q)
    assert torch.equal(out, q)
    out[0, 1].backward()  # d q_y / d z through lambda * R; R maps z-hat (0.6, 0.8) to (0, 1), lambda = 2
    r = torch.nn.functional.normalize(torch.tensor([0.6, 1.8]), dim=0)
    u, qh = torch.tensor([0.6, 0.8]), torch.tensor([0.0, 1.0])
    rot = torch.eye(2) - 2 * torch.outer(r, r) + 2 * torch.outer(qh, u)
    assert torch.allclose(z.grad[0], 2.0 * rot[1], atol=1e-6)


def test_vq_ema_update_follows_the_formula():
    cfg = {"dim": 2, "codebook_size": 2, "use_ema": True, "decay": 0.9, "eps": 1e-5}
    q = quantizer_from_config({"name": "vq", "configuration": cfg}).train()
    q.codebook.data = torch.tensor([[0.0, 0.0], [4.0, 4.0]])
    q.embed_sum.copy_(q.codebook.data)
    q(torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]]))
    assert torch.allclose(q.cluster_size, torch.tensor([0.9 + 0.1 * 2, 0.9 + 0.1 * 1]))
    embed_sum = torch.tensor([[0.1 * 1.0, 0.1 * 1.0], [0.9 * 4 + 0.1 * 5, 0.9 * 4 + 0.1 * 5]])
    n = q.cluster_size.sum()
    smoothed = (q.cluster_size + 1e-5) / (n + 2e-5) * n
    assert torch.allclose(q.codebook, embed_sum / smoothed.unsqueeze(1), atol=1e-6)


def test_vq_kmeans_init_finds_well_separated_clusters():
    centers = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])
    noise = torch.randn(4, 50, 2, generator=torch.Generator().manual_seed(0)) * 0.1
    x = (centers[:, None] + noise).reshape(1, 200, 2)
    q = quantizer_from_config({"name": "vq", "configuration": {"dim": 2, "codebook_size": 4, "use_ema": True, "kmeans_init": True}})
    q.train()(x)
    found = sorted(q.codebook.detach().round().tolist())
    assert found == sorted(centers.tolist())
    assert float(q.eval()(x).usage) == 1.0


def test_vq_dead_codes_are_reset_to_batch_rows():
    cfg = {"dim": 2, "codebook_size": 8, "use_ema": True, "dead_code_threshold": 0.5}
    q = quantizer_from_config({"name": "vq", "configuration": cfg}).train()
    q.codebook.data[:] = 100.0  # every code far away: all but the winner go dead
    q.codebook.data[0] = 0.0
    q.embed_sum.copy_(q.codebook.data)
    q.cluster_size.fill_(0.5)  # decays below the threshold this step
    x = torch.randn(1, 64, 2, generator=torch.Generator().manual_seed(0))
    out = q(x)
    assert int(out.dead_codes) == 7
    rows = x[0]
    for code in q.codebook[1:].detach():
        assert (rows == code).all(dim=1).any(), "a reset code must be a row of the batch"
    assert float(q.eval()(x).usage) > 0.5


def test_gumbel_temperature_anneals_with_training_steps():
    cfg = {"dim": 4, "codebook_size": 8, "temperature": 1.0, "temperature_min": 0.5, "anneal_rate": 0.1}
    q = quantizer_from_config({"name": "gumbel", "configuration": cfg})
    x = torch.randn(1, 3, 4)
    for _ in range(3):
        q.train()(x)
    assert math.isclose(q.temperature, math.exp(-0.3), rel_tol=1e-9)
    for _ in range(20):
        q.train()(x)
    assert q.temperature == 0.5
    kl = q.eval()(x).losses["kl"].detach()
    assert float(kl) >= 0


def test_residual_dropout_marks_dropped_levels_and_decodes_them_as_zero():
    cfg = {"dim": 4, "num_quantizers": 4, "quantizer_dropout": 1.0, "vq": {"codebook_size": 8}}
    q = quantizer_from_config({"name": "residual_vq", "configuration": cfg})
    torch.manual_seed(1)
    seen = set()
    for _ in range(12):
        idx = q.train()(torch.randn(1, 5, 4)).indices
        kept = int((idx[0, 0] >= 0).sum())
        seen.add(kept)
        assert (idx[..., :kept] >= 0).all() and (idx[..., kept:] == -1).all()
    assert len(seen) > 1
    idx = torch.tensor([[[1, 2, -1, -1]]])
    expected = q.levels[0].codebook[1] + q.levels[1].codebook[2]
    assert torch.allclose(q.indices_to_codes(idx)[0, 0], expected)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "fsq", "configuration": {"levels": []}}, "levels must be a non-empty list"),
        ({"name": "fsq", "configuration": {"levels": [8, 1]}}, "levels must all be >= 2"),
        ({"name": "vq", "configuration": {"dim": 8, "codebook_size": 0}}, "codebook_size must be > 0, got: 0"),
        ({"name": "vq", "configuration": {"dim": 8, "codebook_size": -3}}, "codebook_size must be > 0, got: -3"),
        ({"name": "vq", "configuration": {"dim": 4, "codebook_dim": 8}}, "codebook_dim must be <= dim"),
        ({"name": "grouped_vq", "configuration": {"dim": 10, "groups": 4}}, "must be divisible by groups"),
        ({"name": "residual_vq", "configuration": {"dim": 8, "vq": {"dim": 4}}}, "must not set 'dim'"),
        ({"name": "residual_vq", "configuration": {"dim": 8, "vq": {"codebook_size": 0}}}, "codebook_size must be > 0"),
        ({"name": "lfq", "configuration": {"codebook_size": 100}}, "power of two"),
        ({"name": "gumbel", "configuration": {"codebook_size": 0}}, "codebook_size must be > 0"),
        ({"name": "vq", "configuration": {"dim": 8, "codebook_sise": 4}}, "unknown key 'codebook_sise'"),
        ({"name": "vq", "configuration": {"dim": "8"}}, "VQConfig.dim must be int"),
        ({"name": "nope", "configuration": {}}, "unknown quantizer 'nope'"),
        ({"configuration": {}}, "quantizer config must be"),
    ],
)
def test_bad_configs_are_clear_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        quantizer_from_config(config)


def test_index_dtypes_are_the_smallest_that_fit():
    assert index_dtype_for(256) == torch.uint8 and index_dtype_for(257) == torch.int16
    assert index_dtype_for(2**15) == torch.int16 and index_dtype_for(2**16) == torch.int32
    assert str(numpy_index_dtype_for(1000)) == "int16"


@pytest.mark.parametrize("name, cfg", [("fsq", {"levels": [8, 8, 8, 5, 5, 5]}), ("lfq", {"dim": 12, "codebook_size": 2**12})])
def test_bf16_autocast_does_not_reduce_code_usage(name, cfg):
    q = quantizer_from_config({"name": name, "configuration": cfg}).eval()
    x = torch.randn(4, q.dim, 16, 16, generator=torch.Generator().manual_seed(0)) * 2
    fp32 = q(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(x)  # fp32 input, bf16 autocast around: quantization math stays fp32
    bf16 = q(x.bfloat16())  # bf16 input: rounding of the input only
    assert torch.equal(auto.indices, fp32.indices)
    assert float(auto.usage) == float(fp32.usage)
    assert float(bf16.usage) >= 0.97 * float(fp32.usage)
