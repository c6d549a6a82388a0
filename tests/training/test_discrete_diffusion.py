"""The discrete diffusion prior (MDLM): its objective, sampler, checkpoints, conditioning, the
training job, and a side-by-side run with MaskGIT on the same structured token data."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from latentflow.errors import ConfigError, InputError
from latentflow.priors import build_prior, load_prior
from latentflow.priors import discrete_diffusion as dd
from latentflow.registry import class_for

TINY = {"vocab_size": 8, "latent_shape": [2, 3], "hidden_size": 16, "num_layers": 1, "num_heads": 2}


def tiny(**overrides) -> dd.DiscreteDiffusionPrior:
    torch.manual_seed(0)
    prior = build_prior("discrete_diffusion", {**TINY, **overrides})
    with torch.no_grad():  # away from the near-uniform init, so that outputs differ between inputs
        for p in prior.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return prior.eval()


def tokens_of(prior, n: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(prior.config.vocab_size, (n, *prior.config.latent_shape), generator=g)


# ---- the objective -----------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_runs_from_clean_to_masked_and_weight_is_minus_dalpha_over_one_minus_alpha(schedule):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64, requires_grad=True)
    a = dd.alpha(t, schedule)
    (da,) = torch.autograd.grad(a.sum(), t)  # alpha'(t), independent of the closed form in elbo_weight
    assert torch.allclose(dd.elbo_weight(t.detach(), schedule), -da / (1 - a.detach()), rtol=1e-9)
    ends = dd.alpha(torch.tensor([0.0, 1.0], dtype=torch.float64), schedule)
    assert torch.allclose(ends, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-12)
    assert (a.detach().diff() < 0).all()  # more masked as t grows
    if schedule == "linear":
        assert torch.allclose(dd.elbo_weight(t.detach(), schedule), 1 / t.detach())


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_loss_is_the_elbo_weighted_masked_cross_entropy(schedule):
    prior = tiny(schedule=schedule)
    x = tokens_of(prior, 6)
    flat = x.reshape(6, -1)
    t = torch.tensor([0.05, 0.2, 0.4, 0.6, 0.8, 0.99])
    with torch.no_grad():
        got = prior._diffusion_nll(flat, None, t, torch.Generator().manual_seed(7))
    # direct: the same masks (same generator draws), every term written out
    u = torch.rand(flat.shape, generator=torch.Generator().manual_seed(7))
    total = 0.0
    for b in range(6):
        keep = 1 - math.sin(math.pi * t[b] / 2) if schedule == "cosine" else 1 - float(t[b])
        masked = u[b] >= keep
        weight = (math.pi / 2) / math.tan(math.pi * t[b] / 2) if schedule == "cosine" else 1 / float(t[b])
        with torch.no_grad():
            logits = prior(flat[b : b + 1].masked_fill(masked[None], prior.mask_id))[0]
        nll = sum(-F.log_softmax(logits[i], -1)[flat[b, i]] for i in range(flat.shape[1]) if masked[i])
        total += weight * float(nll) / flat.shape[1]
    assert float(got) == pytest.approx(total / 6, rel=1e-5)


def test_training_times_are_stratified_over_t_min_to_one():
    prior = tiny(t_min=0.01)
    t = prior._times(8, torch.device("cpu"), torch.Generator().manual_seed(3))
    assert ((t >= 0.01) & (t <= 1)).all()
    slots = ((t - 0.01) / 0.99 * 8).floor().long().sort().values
    assert torch.equal(slots, torch.arange(8))  # one time in each eighth of [t_min, 1]


def test_loss_backpropagates_and_reports_bits():
    prior = tiny().train()
    loss, logs = prior.loss(tokens_of(prior, 8))
    loss.backward()
    assert loss.item() > 0 and logs["bits_per_token"] == pytest.approx(loss.item() / math.log(2))
    assert all(p.grad is not None for p in prior.parameters())


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="schedule must be one of cosine, linear, got: 'cosin'"):
        build_prior("discrete_diffusion", {**TINY, "schedule": "cosin"})
    with pytest.raises(ConfigError, match="t_min"):
        build_prior("discrete_diffusion", {**TINY, "t_min": 0.0})
    with pytest.raises(Exception, match=r"\[0, 8\)"):
        tiny().loss(torch.full((1, 2, 3), 8))


# ---- sampler -------------------------------------------------------------------------------
def test_samples_are_valid_indices_and_deterministic_per_generator():
    prior = tiny()
    a = prior.sample(4, generator=torch.Generator().manual_seed(0), steps=5)
    b = prior.sample(4, generator=torch.Generator().manual_seed(0), steps=5)
    c = prior.sample(4, generator=torch.Generator().manual_seed(1), steps=5)
    assert a.shape == (4, 2, 3) and a.dtype == torch.long
    assert a.min() >= 0 and a.max() < 8  # no mask token left
    assert torch.equal(a, b) and not torch.equal(a, c)
    one_step = prior.sample(3, generator=torch.Generator().manual_seed(0), steps=1)  # everything in one step
    assert one_step.max() < 8
    with pytest.raises(InputError, match="steps and temperature must be > 0"):
        prior.sample(1, steps=0)


def test_sampler_gumbel_noise_is_float64(monkeypatch):
    seen = []
    real = dd.gumbel_noise

    def spy(shape, generator, device):
        noise = real(shape, generator, device)
        seen.append(noise.dtype)
        return noise

    monkeypatch.setattr(dd, "gumbel_noise", spy)
    tiny().sample(2, generator=torch.Generator().manual_seed(0), steps=3)
    assert seen and set(seen) == {torch.float64}
    assert dd.gumbel_noise((4,), torch.Generator().manual_seed(0), torch.device("cpu")).dtype == torch.float64


def test_float64_gumbel_max_draws_the_categorical_distribution():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    draws = dd.sample_categorical(p.log().expand(40000, 4), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / 40000
    assert torch.allclose(freq, p, atol=0.01)


def test_reverse_step_unmasks_the_schedule_share():
    """From t to s a masked token is revealed with probability (alpha_s - alpha_t) / (1 - alpha_t)."""
    prior = tiny(schedule="linear")
    log_p = torch.full((2000, 50, 8), -math.log(8), dtype=torch.float64)  # 100k draws: sd 0.0015
    drawn = prior._reverse_step(log_p, 0.75, 0.5, torch.Generator().manual_seed(0))
    revealed = (drawn < 8).double().mean()
    assert float(revealed) == pytest.approx((0.5 - 0.25) / 0.75, abs=0.01)
    last = prior._reverse_step(log_p, 0.25, 0.0, torch.Generator().manual_seed(0))
    assert (last < 8).all()  # alpha(0) = 1: nothing stays masked


# ---- checkpoints and registry -----------------------------------------------------------------
def test_registered_and_save_load_gives_equal_outputs(tmp_path):
    assert class_for("prior", "discrete_diffusion") is dd.DiscreteDiffusionPrior
    prior = tiny(schedule="linear", num_classes=3, label_dropout=0.1)
    prior.save_pretrained(tmp_path)
    loaded = load_prior(str(tmp_path))
    assert type(loaded) is dd.DiscreteDiffusionPrior and loaded.config == prior.config and loaded.kind == "discrete_diffusion"
    x, labels = tokens_of(prior), torch.tensor([0, 1, 2, 0, 1])
    assert loaded.validation(x, labels, seed=3) == prior.validation(x, labels, seed=3)
    kwargs = {"labels": torch.tensor([2, 0]), "steps": 4, "guidance_scale": 2.0}
    a = prior.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    b = loaded.sample(2, generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(a, b)


# ---- conditioning ----------------------------------------------------------------------------------
def test_class_conditioning_shapes_dropout_and_guidance():
    prior = tiny(num_classes=3, label_dropout=0.5)
    x, labels = tokens_of(prior, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    flat = x.reshape(6, -1)
    assert prior(flat, labels).shape == (6, 6, 8) and prior(flat, None).shape == (6, 6, 8)
    assert not torch.allclose(prior(flat, labels), prior(flat, None))  # the class token changes the logits
    torch.manual_seed(0)
    dropped = prior._drop_labels(labels.repeat(100), 600, torch.device("cpu"))
    assert 0.4 < float((dropped == 3).double().mean()) < 0.6  # "no class" = index num_classes
    assert torch.equal(dropped[dropped != 3], labels.repeat(100)[dropped != 3])
    loss, _ = prior.train().loss(x, labels)
    assert torch.isfinite(loss)
    s = prior.eval().sample(3, labels=torch.tensor([0, 1, 2]), generator=torch.Generator().manual_seed(0), steps=3,
                            guidance_scale=3.0)
    assert s.shape == (3, 2, 3) and s.max() < 8
    with pytest.raises(InputError, match="guidance_scale=2.0 needs labels"):
        prior.sample(2, steps=2, guidance_scale=2.0)


def test_guidance_follows_the_guided_logits():
    """With scale w the sampler's distribution is softmax(uncond + w (cond - uncond))."""
    prior = tiny(num_classes=2)
    tokens = torch.full((1, 6), prior.mask_id)
    labels = torch.tensor([1])
    cond, uncond = prior(tokens, labels).double(), prior(tokens, None).double()
    got = prior._log_probs(tokens, labels, 1.0, None, 2.5)
    assert torch.allclose(got, F.log_softmax(uncond + 2.5 * (cond - uncond), -1))


# ---- the training job --------------------------------------------------------------------------------
def job_config(out: str, path: str = ""):
    from latentflow.training.config import TrainPriorConfig

    return TrainPriorConfig.from_dict({
        "prior": {"kind": "discrete_diffusion", "config": {"hidden_size": 16, "num_layers": 1, "num_heads": 2}},
        "data": {"path": path, "batch_size": 8, "val_fraction": 0.25},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "ema_decay": 0.0},
        "train": {"output_dir": out, "max_steps": 6, "log_every": 3, "checkpoint_every": 1000},
        "sample": {"num_samples": 2, "steps": 4}})


def test_train_prior_dispatches_discrete_diffusion_to_token_data(tmp_path):
    from latentflow.training.data import LatentTable
    from latentflow.training.prior_stage import train_prior

    summary = train_prior(job_config(str(tmp_path / "dd")), table=LatentTable(torch.randint(8, (40, 4, 4)), fingerprint="toy"))
    prior = load_prior(summary["final_prior"])
    assert prior.kind == "discrete_diffusion" and prior.config.vocab_size == 8 and prior.config.codec_fingerprint == "toy"
    assert 0 < summary["metrics"]["nll_bits_per_token"]
    with pytest.raises(ConfigError, match="discrete_diffusion' models token indices"):
        train_prior(job_config(str(tmp_path / "bad")), table=LatentTable(torch.randn(40, 4, 4, 4), fingerprint="toy"))


def test_train_prior_job_trains_discrete_diffusion_from_a_token_cache(vq_latents, tmp_path):
    """The user's path: a VQ token cache -> train -> samples decoded by the codec's decoder."""
    from latentflow.training.prior_stage import train_prior

    summary = train_prior(job_config(str(tmp_path / "dd"), vq_latents))
    prior = load_prior(summary["final_prior"])
    assert prior.kind == "discrete_diffusion" and prior.config.vocab_size == 32 and prior.config.codec_fingerprint
    assert 0 < summary["metrics"]["nll_bits_per_token"] and (tmp_path / "dd" / "samples.png").exists()


# ---- side by side with MaskGIT ---------------------------------------------------------------------------
VOCAB, GRID, PATTERNS = 16, (4, 4), 4


def pattern_tokens(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 4, 4) grids, each one of 4 fixed random patterns over 16 tokens (drawn uniformly).
    Returns (tokens, the patterns (4, 16)); the source has log2(4) / 16 = 0.125 bits per token."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randint(VOCAB, (PATTERNS, GRID[0] * GRID[1]), generator=torch.Generator().manual_seed(123))
    which = torch.randint(PATTERNS, (n,), generator=g)
    return patterns[which].view(n, *GRID), patterns


def train(prior, data: torch.Tensor, steps: int, batch: int = 64, lr: float = 3e-3, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.0)
    g, losses = torch.Generator().manual_seed(seed), []
    prior.train()
    for _ in range(steps):
        rows = torch.randint(len(data), (batch,), generator=g)
        loss, _ = prior.loss(data[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def token_usage(samples: torch.Tensor, patterns: torch.Tensor) -> dict[str, float]:
    """Unique tokens / codebook, mean per-position entropy (bits), exact pattern matches, and the
    total variation distance between the sampled and the true (uniform) pattern frequencies."""
    flat = samples.reshape(len(samples), -1)
    counts = F.one_hot(flat, VOCAB).sum(0).double()  # (L, V)
    p = counts / counts.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log2()).sum(-1).mean()
    match = (flat[:, None] == patterns[None]).all(-1)  # (N, P)
    freq = match.double().sum(0) / len(flat)
    return {"unique_over_codebook": flat.unique().numel() / VOCAB, "position_entropy_bits": float(entropy),
            "pattern_match": float(match.any(-1).double().mean()), "pattern_tv": 0.5 * float((freq - 1 / PATTERNS).abs().sum()
                                                                                            + (1 - freq.sum()))}


def curve(losses: list[float], every: int = 50) -> list[float]:
    return [round(sum(losses[i:i + every]) / every, 3) for i in range(0, len(losses), every)]


def test_discrete_diffusion_learns_patterns_side_by_side_with_maskgit():
    torch.set_num_threads(1)
    data, patterns = pattern_tokens(2048)
    sizes = {"vocab_size": VOCAB, "latent_shape": list(GRID), "hidden_size": 32, "num_layers": 2, "num_heads": 2}
    diffusion, maskgit = build_prior("discrete_diffusion", sizes), build_prior("maskgit", sizes)
    steps = 300
    losses = {"discrete_diffusion": train(diffusion, data, steps), "maskgit": train(maskgit, data, steps)}
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    samples = {"discrete_diffusion": diffusion.eval().sample(256, generator=gen(), steps=16),
               "maskgit": maskgit.eval().sample(256, generator=gen(), steps=8)}
    uniform = torch.randint(VOCAB, (256, *GRID), generator=gen())
    stats = {name: token_usage(s, patterns) for name, s in samples.items()} | {"uniform": token_usage(uniform, patterns),
                                                                                "data": token_usage(data[:256], patterns)}
    val = {name: prior.validation(data[:256]) for name, prior in (("discrete_diffusion", diffusion), ("maskgit", maskgit))}
    for name, values in losses.items():
        print(f"{name} loss (nats, mean of each 50 steps): {curve(values)}; validation {val[name]}")
    for name, s in stats.items():
        print(f"{name}: {s}")

    d = losses["discrete_diffusion"]
    assert sum(d[-50:]) / 50 < 0.3 * sum(d[:50]) / 50  # the ELBO falls clearly
    # the ELBO bounds the source's 0.125 bits/token from above (up to estimator noise); uniform is 4 bits
    assert 0.125 - 0.05 < val["discrete_diffusion"]["nll_bits_per_token"] < 0.5
    got, base, true = stats["discrete_diffusion"], stats["uniform"], stats["data"]
    assert got["pattern_match"] > 0.3 and base["pattern_match"] == 0.0  # whole patterns, never by chance
    assert got["pattern_tv"] < 0.7 < base["pattern_tv"]
    # the sampler keeps the data's per-position diversity (MaskGIT's confidence-ordered decoding does not)
    assert abs(got["position_entropy_bits"] - true["position_entropy_bits"]) < 0.3
    assert abs(got["position_entropy_bits"] - true["position_entropy_bits"]) < \
        abs(stats["maskgit"]["position_entropy_bits"] - true["position_entropy_bits"])
