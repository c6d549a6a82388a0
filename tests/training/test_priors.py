"""Stage 2: priors over cached latents (GPT, MaskGIT, rectified flow), through the data layer's readers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from latentflow.errors import CodecMismatchError, ConfigError
from latentflow.priors import build_prior, load_prior
from latentflow.training.config import TrainPriorConfig
from latentflow.training.data import LatentTable
from latentflow.training.prior_stage import evaluate_prior, train_prior


def markov_tokens(n: int, seed: int = 0) -> tuple[torch.Tensor, float]:
    """(n, 4, 4) tokens over 8 symbols in raster order: the first uniform (3 bits), each next one
    is the previous plus 0 or 1 (mod 8) with equal odds (1 bit). Returns tokens and the entropy in bits/token."""
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(8, (n, 1), generator=g)
    steps = torch.randint(2, (n, 15), generator=g)
    tokens = (first + torch.cat([torch.zeros(n, 1, dtype=torch.long), steps.cumsum(1)], 1)) % 8
    return tokens.view(n, 4, 4), (3.0 + 15 * 1.0) / 16


def prior_cfg(kind: str, out: str, path: str = "", **overrides) -> TrainPriorConfig:
    data = {"prior": {"kind": kind, "config": {"hidden_size": 32, "num_layers": 2, "num_heads": 2}},
            "data": {"path": path, "batch_size": 8, "val_fraction": 0.25},
            "optim": {"lr": 3e-3, "warmup_steps": 5, "ema_decay": 0.0},
            "train": {"output_dir": out, "max_steps": 20, "log_every": 10, "checkpoint_every": 1000},
            "sample": {"num_samples": 4, "steps": 4}}
    for key, value in overrides.items():
        section, name = key.split("__")
        data[section][name] = value
    return TrainPriorConfig.from_dict(data)


def test_ar_prior_reaches_the_entropy_of_a_known_token_source(tmp_path):
    tokens, entropy_bits = markov_tokens(3000)
    table = LatentTable(tokens, fingerprint="toy")
    cfg = prior_cfg("gpt", str(tmp_path / "gpt"), data__batch_size=64, train__max_steps=80,
                    optim__lr=3e-3, train__eval_every=80, data__val_fraction=0.1)
    summary = train_prior(cfg, table=table)
    nll = summary["metrics"]["nll_bits_per_token"]
    assert abs(nll - entropy_bits) <= 0.10 * entropy_bits, (nll, entropy_bits)
    assert nll < 0.5 * math.log2(8)  # far below uniform (3 bits)
    prior = load_prior(summary["final_prior"])
    assert prior.config.codec_fingerprint == "toy" and prior.config.vocab_size == 8
    gen = torch.Generator().manual_seed(0)
    sample = prior.sample(16, generator=gen, temperature=1.0, top_k=4)
    diffs = (sample.flatten(1).diff(dim=1) % 8)
    assert ((diffs == 0) | (diffs == 1)).float().mean() > 0.9  # it learned the transition rule


def test_flow_prior_on_vae_latents_samples_and_decodes(vae_latents, tmp_path):
    cfg = prior_cfg("flow", str(tmp_path / "flow"), vae_latents,
                    prior__config={"hidden_size": 32, "num_layers": 1, "num_heads": 2, "patch_size": 2})
    summary = train_prior(cfg)
    prior = load_prior(summary["final_prior"])
    z = prior.sample(3, generator=torch.Generator().manual_seed(0), steps=4)
    assert z.shape == (3, 4, 8, 8) and z.dtype == torch.float32 and torch.isfinite(z).all()
    assert summary["metrics"]["flow_loss"] > 0
    grid = Image.open(summary["samples_png"])
    assert grid.size == (2 + 4 * 18, 2 + 18)  # 4 decoded 16x16 samples in a row
    history = [r["loss"] for r in summary["history"]]
    assert history[-1] < history[0]


def test_maskgit_prior_on_vq_tokens_samples_and_decodes(vq_latents, tmp_path):
    from latentflow.read.latents import decode_latents

    summary = train_prior(prior_cfg("maskgit", str(tmp_path / "mg"), vq_latents))
    prior = load_prior(summary["final_prior"])
    tokens = prior.sample(2, generator=torch.Generator().manual_seed(0), steps=4)
    assert tokens.shape == (2, 8, 8) and tokens.dtype == torch.long
    assert tokens.min() >= 0 and tokens.max() < 32  # every token unmasked and in the codebook
    images = decode_latents(tokens, vq_latents)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    assert 0 < summary["metrics"]["nll_bits_per_token"] < 2 * math.log2(32)


def test_prior_refuses_latents_of_another_codec(vae_latents, vq_latents, tmp_path):
    summary = train_prior(prior_cfg("gpt", str(tmp_path / "gpt"), vq_latents, train__max_steps=2))
    assert "nll_bits_per_token" in evaluate_prior(summary["final_prior"], vq_latents)
    with pytest.raises(CodecMismatchError, match="codec"):
        evaluate_prior(summary["final_prior"], vae_latents)
    prior = load_prior(summary["final_prior"])
    with pytest.raises(CodecMismatchError):
        prior.check_codec("0" * 64)
    with pytest.raises(ConfigError, match="continuous latents"):
        train_prior(prior_cfg("gpt", str(tmp_path / "bad"), vae_latents))


def test_resuming_a_prior_on_another_codec_is_refused(vq_latents, tmp_path):
    out = str(tmp_path / "p")
    train_prior(prior_cfg("gpt", out, vq_latents, train__max_steps=4, train__checkpoint_every=2), until=2)
    other = LatentTable(torch.randint(32, (40, 8, 8)), fingerprint="other")
    with pytest.raises(CodecMismatchError):
        train_prior(prior_cfg("gpt", out, train__max_steps=4), table=other)


@pytest.mark.parametrize("kind", ["gpt", "maskgit"])
def test_token_priors_reject_out_of_range_tokens(kind):
    prior = build_prior(kind, {"vocab_size": 8, "latent_shape": [2, 2], "hidden_size": 16, "num_layers": 1, "num_heads": 2})
    with pytest.raises(Exception, match=r"\[0, 8\)"):
        prior.loss(torch.full((1, 2, 2), 9))


def test_train_prior_job_runs_from_yaml_with_overrides(vq_latents, tmp_path, capsys):
    from latentflow.training.cli import run_job

    config = tmp_path / "job.yaml"
    config.write_text(f"prior: {{kind: maskgit, config: {{hidden_size: 16, num_layers: 1, num_heads: 2}}}}\n"
                      f"data: {{path: {vq_latents}, batch_size: 4}}\n"
                      f"train: {{output_dir: {tmp_path / 'out'}, max_steps: 50}}\nsample: {{num_samples: 2, steps: 2}}\n")
    assert run_job("prior", "doc", ["--config", str(config), "train.max_steps=2"]) == 0
    assert "nll_bits_per_token" in capsys.readouterr().out
    assert (tmp_path / "out" / "samples.png").exists() and (tmp_path / "out" / "final" / "model.safetensors").exists()
    assert run_job("prior", "doc", ["--config", str(config), "train.bogus=1"]) == 2  # unknown key: usage error


# ---- checkpoints: the one save/load path (latentflow.pretrained) -----------------------------
TINY_PRIORS = {
    "gpt": {"vocab_size": 8, "latent_shape": [2, 3], "hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_classes": 3},
    "maskgit": {"vocab_size": 8, "latent_shape": [2, 3], "hidden_size": 16, "num_layers": 1, "num_heads": 2},
    "flow": {"latent_shape": [4, 4, 4], "hidden_size": 16, "num_layers": 1, "num_heads": 2, "patch_size": 2},
    "flow_unet": {"latent_shape": [4, 4, 4], "network": "unet", "block_out_channels": [8, 16], "norm_num_groups": 4},
}


def tiny_prior(name: str):
    torch.manual_seed(0)
    prior = build_prior(name.split("_")[0], TINY_PRIORS[name])
    with torch.no_grad():  # zero-initialised output layers (adaLN-Zero) would make any two flows agree
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return prior.eval()


def prior_batch(prior) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (3, *prior.config.latent_shape)
    return torch.randn(shape, generator=g) if not prior.discrete else torch.randint(prior.config.vocab_size, shape, generator=g)


@pytest.mark.parametrize("name", sorted(TINY_PRIORS))
def test_prior_save_load_gives_equal_outputs(name, tmp_path):
    prior = tiny_prior(name)
    prior.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_prior(str(tmp_path))
    assert type(loaded) is type(prior) and loaded.config == prior.config and not loaded.training
    assert loaded.weights_sha256 and type(prior).from_pretrained(str(tmp_path)).weights_hash() == loaded.weights_hash()
    x = prior_batch(prior)
    assert loaded.validation(x, seed=3) == prior.validation(x, seed=3)
    kwargs = {"steps": 2}
    a = prior.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    b = loaded.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a, b)


def test_prior_checkpoint_with_a_renamed_key_names_it(tmp_path):
    from safetensors.torch import save_file

    from latentflow.errors import CheckpointError

    prior = tiny_prior("gpt")
    prior.save_pretrained(tmp_path)
    state = dict(prior.state_dict())
    state["head.weight_renamed"] = state.pop("head.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_prior(str(tmp_path))
    assert "missing keys ['head.weight']" in str(err.value) and "unexpected keys ['head.weight_renamed']" in str(err.value)


def test_prior_checkpoints_of_the_old_block_names_still_load(tmp_path):
    """Priors written before the shared TransformerBlock (ln1/ln2/mlp) load into norm1/norm2/ffn."""
    from safetensors.torch import save_file

    prior = tiny_prior("maskgit")
    prior.save_pretrained(tmp_path)
    old = {k.replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.").replace(".ffn.", ".mlp."): v
           for k, v in prior.state_dict().items()}
    assert "blocks.0.ln1.weight" in old
    save_file(old, str(tmp_path / "model.safetensors"))
    x = prior_batch(prior)
    assert load_prior(str(tmp_path)).validation(x) == prior.validation(x)


def test_loading_a_prior_as_another_kind_or_a_model_folder_is_refused(tmp_path):
    from latentflow.priors.gpt import GPTPrior

    tiny_prior("maskgit").save_pretrained(tmp_path / "mg")
    with pytest.raises(ConfigError, match="prior_kind 'gpt', got: 'maskgit'"):
        GPTPrior.from_pretrained(str(tmp_path / "mg"))
    with pytest.raises(ConfigError, match="not a prior checkpoint"):
        load_prior("kl-f8")


def test_load_pretrained_reads_any_kind_from_its_config(tmp_path):
    import latentflow as lf
    from latentflow.pretrained import load_pretrained

    tiny_prior("flow").save_pretrained(tmp_path / "prior")
    q = lf.quantizer_from_config({"name": "fsq", "configuration": {"levels": [4, 4]}})
    q.save_pretrained(tmp_path / "q")
    assert type(load_pretrained(str(tmp_path / "prior"))).__name__ == "FlowPrior"
    assert type(load_pretrained(str(tmp_path / "q"))) is lf.FiniteScalarQuantizer
    assert type(load_pretrained("kl-f8")) is lf.AutoencoderKLModel


def test_priors_and_quantizers_share_the_models_registry():
    import latentflow as lf
    from latentflow import registry
    from latentflow.priors.base import prior_class_for
    from latentflow.priors.gpt import GPTPrior

    assert prior_class_for("gpt") is GPTPrior is registry.class_for("prior", "gpt")
    assert registry.class_for("quantizer", "fsq") is lf.FiniteScalarQuantizer
    assert registry.class_for("model", "vae") is lf.VariationalAutoencoderModel
    with pytest.raises(ConfigError, match="unknown prior 'nope'; registered: \\['discrete_diffusion', 'flow', 'gpt', 'maskgit'\\]"):
        prior_class_for("nope")


# each subpackage (found on disk, so a new or renamed one is covered), with the modules that make it up where
# importing the package alone would not load them
_PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "latentflow"
SUBPACKAGES = {p.parent.name: [] for p in _PACKAGE_ROOT.glob("*/__init__.py")} | {
    "models": ["latentflow.models.vae", "latentflow.models.transvae", "latentflow.models.vq_autoencoder"],
    "quantizers": ["latentflow.quantizers.vq", "latentflow.quantizers.fsq"],
    "priors": ["latentflow.priors.gpt", "latentflow.priors.maskgit", "latentflow.priors.flow"],
}


@pytest.mark.parametrize("package", sorted(SUBPACKAGES))
def test_each_package_imports_alone_and_priors_do_not_import_the_trainer(package):
    """Layers import downwards only: a fresh interpreter imports each package on its own, and
    models, quantizers and priors never pull ``latentflow.training`` in."""
    import subprocess
    import sys

    modules = [f"latentflow.{package}", *SUBPACKAGES[package]]
    code = (f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('latentflow.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if package in ("models", "quantizers", "priors"):
        assert out.stdout.strip() == "[]", f"latentflow.{package} imports the trainer: {out.stdout}"
