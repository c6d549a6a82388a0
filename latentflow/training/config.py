"""Typed YAML configs for the trainer jobs.

A job's YAML loads into one :class:`TrainAutoencoderConfig` or
:class:`TrainPriorConfig`; every section is a dataclass whose ``from_dict``
rejects unknown keys (naming them) and values of the wrong type. Command-line
``key=value`` overrides use dotted paths (``optim.lr=1e-4``); values parse as YAML.

Example::

    cfg = load_config(TrainAutoencoderConfig, "configs/train/vae_tiny.yaml", ["train.max_steps=10"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from latentflow.config_cli import load_job_config
from latentflow.configuration import Config, check_choice, check_positive
from latentflow.errors import ConfigError

PRIOR_KINDS = ("gpt", "maskgit", "discrete_diffusion", "flow")


@dataclass
class SectionConfig(Config):
    """Base of every trainer config section (the shared strict :class:`Config`)."""


@dataclass
class ModelSpec(SectionConfig):
    """Which model to train: a fresh one from ``config`` (with ``model_type``) or ``pretrained``.

    Attributes:
        config: the model's config dict, with its ``model_type`` (a fresh model).
        pretrained: a checkpoint to start from (folder, URL or ``models/`` name) instead of ``config``.
    """

    config: dict[str, Any] | None = None
    pretrained: str | None = None

    def validate(self) -> None:
        if (self.config is None) == (self.pretrained is None):
            raise ConfigError("model needs exactly one of 'config' (with model_type) or 'pretrained'")


@dataclass
class ImageDataConfig(SectionConfig):
    """Stage-1 data: the encode job's source + processor, streamed.

    Attributes:
        source: a ``SourceConfig`` dict (format, urls, ...).
        processor: an ``ImageProcessorConfig`` dict.
        video: a ``VideoProcessorConfig`` dict: train a video autoencoder on clips of the source's videos.
        eval_source: held-out images for PSNR/SSIM; ``None`` holds out the last ``holdout_shards`` shards.
        holdout_shards: shards of ``source`` kept for evaluation when ``eval_source`` is None.
        batch_size: images per step per worker.
        shuffle: shuffle shard order and samples within a shard, per epoch (seeded).
        eval_batches: batches of the held-out images scored at each evaluation.
    """

    source: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] | None = None
    eval_source: dict[str, Any] | None = None
    holdout_shards: int = 0
    batch_size: int = 8
    shuffle: bool = True
    eval_batches: int = 2

    def validate(self) -> None:
        check_positive("data", batch_size=self.batch_size, eval_batches=self.eval_batches)
        check_positive("data", holdout_shards=self.holdout_shards, allow_zero=True)


@dataclass
class LossConfig(SectionConfig):
    """Stage-1 losses. Bottleneck terms (KL, beta, VQ) come from the model's own ``forward`` losses.

    Attributes:
        reconstruction: ``l1`` or ``l2``.
        rec_weight: weight of the reconstruction term.
        model_loss_weights: weight per named term of ``model(x).losses``; ``None`` adds the
            model's weighted total minus its reconstruction term.
        perceptual_weight / perceptual_weights: LPIPS-style loss; needs local safetensors weights.
        disc_weight / disc_start: PatchGAN hinge loss, on from step ``disc_start``, LDM adaptive weight.
        disc_layers / disc_channels: depth and base width of the PatchGAN discriminator.
        disc_lr: learning rate of the discriminator's optimizer.
        adaptive_weight_max: cap on the LDM adaptive weight of the GAN term.
        eq_weight: EQ-VAE equivariance (scale / rotate latents vs images).
        eq_scales: downscale factors EQ-VAE draws from.
        eq_rotate: EQ-VAE also rotates by multiples of 90 degrees.
        eq_prob: probability that a step applies the EQ-VAE transform.
        vf_weight / vf_model: alignment to a frozen feature model saved with ``save_pretrained``.
        vf_margin_cos / vf_margin_dist: VF loss margins of the cosine and the distance-matrix terms.
    """

    reconstruction: str = "l1"
    rec_weight: float = 1.0
    model_loss_weights: dict[str, float] | None = None
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_layers: int = 2
    disc_channels: int = 32
    disc_lr: float = 1e-4
    adaptive_weight_max: float = 1e4
    eq_weight: float = 0.0
    eq_scales: tuple[float, ...] = (0.5, 0.75)
    eq_rotate: bool = True
    eq_prob: float = 0.5
    vf_weight: float = 0.0
    vf_model: str | None = None
    vf_margin_cos: float = 0.5
    vf_margin_dist: float = 0.25

    def validate(self) -> None:
        check_choice("loss", "reconstruction", self.reconstruction, ("l1", "l2"))
        if self.perceptual_weight > 0 and not self.perceptual_weights:
            raise ConfigError("loss.perceptual_weight > 0 needs loss.perceptual_weights (a local .safetensors path)")
        if self.vf_weight > 0 and not self.vf_model:
            raise ConfigError("loss.vf_weight > 0 needs loss.vf_model (a local save_pretrained folder)")
        if not 0.0 <= self.eq_prob <= 1.0:
            raise ConfigError(f"loss.eq_prob must be in [0, 1], got: {self.eq_prob}")


@dataclass
class OptimConfig(SectionConfig):
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``; EMA of the weights.

    Attributes:
        lr: peak learning rate (after warmup).
        betas: AdamW's (beta1, beta2).
        weight_decay: AdamW's decoupled weight decay.
        warmup_steps: steps of linear warmup from 0 to ``lr``.
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
        grad_clip: the global gradient norm is clipped to this.
        ema_decay: decay of the EMA of the weights (0 turns the EMA off).
    """

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999

    def validate(self) -> None:
        check_positive("optim", lr=self.lr)
        check_positive("optim", warmup_steps=self.warmup_steps, allow_zero=True)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must be in [0, 1), got: {self.ema_decay}")


@dataclass
class RunSection(SectionConfig):
    """Loop length, precision, seeds, cadence and where outputs go.

    Attributes:
        output_dir: checkpoints (``checkpoints/step-XXXXXXX``), ``log.jsonl``, PNGs.
        max_steps: optimizer steps to train for.
        seed: seeds the initialization and the data order.
        mixed_precision: ``no`` or ``bf16`` (autocast).
        log_every: steps between lines of ``log.jsonl``.
        checkpoint_every: steps between checkpoints.
        eval_every: steps between evaluations during training; 0: only the final one (``metrics.json``).
        resume: continue from the newest checkpoint in ``output_dir`` when there is one.
        num_workers: Ray Train workers (DDP); > 1 runs under Ray Train ``TorchTrainer``.
        use_gpu: one GPU per worker (nccl) instead of CPU (gloo).
        cpus_per_worker: logical CPUs reserved per Ray Train worker.
    """

    output_dir: str = "runs/train"
    max_steps: int = 1000
    seed: int = 0
    mixed_precision: str = "no"
    log_every: int = 10
    checkpoint_every: int = 500
    eval_every: int = 0
    resume: bool = True
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0

    def validate(self) -> None:
        check_positive("train", max_steps=self.max_steps, log_every=self.log_every,
                       checkpoint_every=self.checkpoint_every, num_workers=self.num_workers,
                       cpus_per_worker=self.cpus_per_worker)
        check_choice("train", "mixed_precision", self.mixed_precision, ("no", "bf16"))


@dataclass
class TrainAutoencoderConfig(SectionConfig):
    """Stage 1: ``jobs/train_autoencoder.py``.

    Attributes:
        model: which model to train (:class:`ModelSpec`).
        data: the images, streamed (:class:`ImageDataConfig`).
        loss: the loss terms and their weights (:class:`LossConfig`).
        optim: optimizer, schedule and EMA (:class:`OptimConfig`).
        train: loop length, precision, cadence, outputs (:class:`RunSection`).
    """

    model: ModelSpec = field(default_factory=lambda: ModelSpec(config={"model_type": "vae"}))
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunSection = field(default_factory=RunSection)


@dataclass
class LatentDataConfig(SectionConfig):
    """Stage-2 data: a latent dataset written by the encode job.

    Streamed through ``LatentDataset.iter_batches``: memory is one shuffle buffer, whatever
    the dataset size; each batch holds one bucket shape.

    Attributes:
        path: the encode job's output folder or URL.
        storage_options: fsspec options to read ``path`` (credentials; never written).
        batch_size: rows per step per worker.
        val_fraction: share of rows held out for validation: the first rows of every shard
            (deterministic), at most ``max_val_rows``.
        max_val_rows: cap on validation rows (read again at every evaluation, never all held).
        normalize: apply the codec's normalization rule (continuous latents).
        resample: draw ``mean + std * eps`` where logvar is stored.
        num_classes: class conditioning from the ``label`` column (0 = unconditional, labels
            ignored); > 0 needs a label on every row.
        bucket: train on one bucket shape only (``"HxW"``); default: every bucket (flow priors).
        shuffle_buffer: rows shuffled together in memory (one window per bucket shape).
        text: a cached text column of the encode job (``text_encoders`` entry name, e.g. ``t5``): the flow prior
            is conditioned on it through cross-attention (None = not text-conditioned).
    """

    path: str = ""
    storage_options: dict[str, Any] | None = None
    batch_size: int = 32
    val_fraction: float = 0.1
    max_val_rows: int = 1024
    normalize: bool = True
    resample: bool = True
    num_classes: int = 0
    bucket: str | None = None
    shuffle_buffer: int = 4096
    text: str | None = None

    def validate(self) -> None:
        check_positive("data", batch_size=self.batch_size, shuffle_buffer=self.shuffle_buffer)
        check_positive("data", max_val_rows=self.max_val_rows, num_classes=self.num_classes, allow_zero=True)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in [0, 1), got: {self.val_fraction}")


@dataclass
class PriorSpec(SectionConfig):
    """Which prior to train.

    Attributes:
        kind: ``gpt``, ``maskgit``, ``discrete_diffusion`` (token indices) or ``flow`` (continuous latents).
        config: the prior's config dict (sizes); the codec fills in what the latents fix.
    """

    kind: str = "gpt"
    config: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        check_choice("prior", "kind", self.kind, PRIOR_KINDS)


@dataclass
class SampleConfig(SectionConfig):
    """Sampling after training.

    Attributes:
        num_samples: samples drawn and decoded after training.
        temperature: softmax temperature of token priors.
        top_k: sample among the k likeliest tokens (token priors); None for all.
        steps: sampling steps (MaskGIT, discrete diffusion, flow).
        seed: seeds the sampling.
        prompts: text-conditioned priors: the prompts sampled from, a list or a UTF-8 file with one per line
            (encoded once, with the text encoder the latents' codec records); one sample per prompt.
        prompt_cache: or an ``encode_prompts`` output (text-only mode) holding the prompts' embeddings.
        guidance_scale: classifier-free guidance scale (1 = none).
    """

    num_samples: int = 8
    temperature: float = 1.0
    top_k: int | None = None
    steps: int = 8
    seed: int = 0
    prompts: list[str] | str | None = None
    prompt_cache: str | None = None
    guidance_scale: float = 1.0

    def validate(self) -> None:
        check_positive("sample", num_samples=self.num_samples, temperature=self.temperature, steps=self.steps)


@dataclass
class TrainPriorConfig(SectionConfig):
    """Stage 2: ``jobs/train_prior.py``.

    Attributes:
        prior: which prior (:class:`PriorSpec`).
        data: the latent dataset, streamed (:class:`LatentDataConfig`).
        optim: optimizer, schedule and EMA (:class:`OptimConfig`).
        train: loop length, precision, cadence, outputs (:class:`RunSection`).
        sample: sampling after training (:class:`SampleConfig`).
    """

    prior: PriorSpec = field(default_factory=PriorSpec)
    data: LatentDataConfig = field(default_factory=LatentDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, ema_decay=0.0))
    train: RunSection = field(default_factory=RunSection)
    sample: SampleConfig = field(default_factory=SampleConfig)


def load_config(cls: type[SectionConfig], path: str | None, overrides: list[str] | None = None,
                storage_options: dict | None = None) -> SectionConfig:
    """Read a YAML file (local or fsspec URL), apply overrides typed against ``cls``, build the typed config
    (:func:`latentflow.config_cli.load_job_config`)."""
    return load_job_config(cls, path, overrides, storage_options)
