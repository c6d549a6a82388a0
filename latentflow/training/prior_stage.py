"""Stage 2 entry point: train a prior over a cached latent dataset, sample, decode, report.

The latent output is streamed, never loaded whole: :class:`~latentflow.training.data.LatentCacheStream`
over ``LatentDataset.iter_batches`` holds one shuffle buffer of rows (``data.shuffle_buffer``),
gives each worker disjoint rows, and makes every batch one bucket shape (flow priors take any
bucket their patch size divides; token priors need one grid, ``data.bucket``). Validation reads
the first rows of every shard (``data.val_fraction``, at most ``data.max_val_rows``) through the
same reader at each evaluation.

The prior's config is completed from the data: ``latent_shape`` (the largest bucket's),
``vocab_size`` from the codec's codebook size, ``codec_fingerprint`` from the codec. A
checkpoint or prior trained on another codec is refused
(:class:`~latentflow.errors.CodecMismatchError`). Unlabeled data trains unconditionally;
``data.num_classes > 0`` needs a label on every row (:class:`~latentflow.errors.ConfigError`
before training otherwise). Captions ride along in each batch (``captions``), unused so far.

Example::

    summary = train_prior(load_config(TrainPriorConfig, "configs/train/flow_prior.yaml"))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

import fsspec
import torch

from latentflow.errors import ConfigError, InputError
from latentflow.priors.base import PriorModel, build_prior, load_prior
from latentflow.progress import Progress
from latentflow.training import checkpoint as ckpt
from latentflow.training.config import TrainPriorConfig
from latentflow.training.data import LatentCacheStream, LatentStream, LatentTable, prior_batch, table_rows
from latentflow.training.entrypoints import seed_everything, write_json
from latentflow.training.tasks import PriorTask
from latentflow.training.trainer import Trainer, pick_device
from latentflow.training.trainer import rank as trainer_rank


@dataclass
class PriorData:
    """What the trainer knows of its latents, streamed or in memory.

    Attributes:
        fingerprint: the codec fingerprint the prior records.
        discrete: token indices (gpt, maskgit, discrete_diffusion) rather than continuous latents (flow).
        latent_shape: the per-row shape of the largest bucket.
        codebook_size: discrete codecs: the number of codes.
        buckets: rows per bucket shape (``{"": n}`` for an in-memory table).
        shapes: the per-row latent shape of each bucket.
    """

    fingerprint: str
    discrete: bool
    latent_shape: tuple[int, ...]
    codebook_size: int | None = None
    buckets: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    text_dim: int | None = None


def prior_config_for(cfg: TrainPriorConfig, data: PriorData | LatentTable) -> dict[str, Any]:
    """The prior's config dict, completed from the latent data and its codec."""
    from latentflow.priors.base import prior_class_for

    conf = {**cfg.prior.config, "latent_shape": list(data.latent_shape),
            "codec_fingerprint": data.fingerprint, "num_classes": cfg.data.num_classes}
    if getattr(data, "text_dim", None):  # a text-conditioned flow prior: the cached column's width
        conf["text_dim"] = data.text_dim
    if prior_class_for(cfg.prior.kind).discrete:  # gpt, maskgit, discrete_diffusion
        if not data.discrete:
            raise ConfigError(f"prior.kind={cfg.prior.kind!r} models token indices; "
                              f"{cfg.data.path!r} holds continuous latents (use kind=flow)")
        buckets = getattr(data, "buckets", {})
        if len(buckets) > 1:
            raise ConfigError(f"prior.kind={cfg.prior.kind!r} models one token grid; {cfg.data.path!r} holds bucket shapes "
                              f"{sorted(buckets)}: set data.bucket=<one of them>, or train kind=flow")
        if "vocab_size" not in conf and not data.codebook_size:
            raise ConfigError(f"the codec of {cfg.data.path!r} records no codebook size; set prior.config.vocab_size")
        conf.setdefault("vocab_size", data.codebook_size)
    elif data.discrete:
        raise ConfigError(f"prior.kind={cfg.prior.kind!r} models continuous latents; {cfg.data.path!r} holds token indices "
                          "(use gpt, maskgit or discrete_diffusion)")
    return conf


def check_latent_grids(cfg: TrainPriorConfig, data: PriorData, codec: Any) -> None:
    """Refuse, before training, a flow prior whose patch (or UNet levels) does not divide every bucket's
    latent grid, in one line naming the encode setting that fixes it (``processor.bucket_step``)."""
    from latentflow.priors.flow import latent_grid

    if cfg.prior.kind != "flow" or data.discrete:
        return
    grid = latent_grid({**cfg.prior.config, "latent_shape": data.latent_shape})
    bad = {b: s[1:] for b, s in data.shapes.items() if len(s) - 1 == len(grid) and any(n % g for n, g in zip(s[1:], grid))}
    if not bad:
        return
    f, spatial = codec.downsample_factor, max(grid[-2:])
    section = "video" if codec.modality == "video" else "processor"
    fits = sorted(b for b in data.shapes if b not in bad)
    got = ", ".join(f"{b} -> {'x'.join(map(str, s))}" for b, s in sorted(bad.items()))
    if codec.modality == "audio":
        fix = f"re-encode with audio.segment_seconds (and duration_buckets) a multiple of {grid[0]} latent frames"
    elif codec.bucketed:
        fix = (f"re-encode with {section}.bucket_step={f * spatial} "
               f"(downsample factor {f} x grid {spatial}; 'auto', the default, is 2 x {f})")
    else:
        fix = f"re-encode with {section}.resolution a multiple of {f * spatial}"
    if grid[0] > 1 and len(grid) == 3:
        fix += f", clips whose latent length is a multiple of {grid[0]}"
    pick = f", or train one bucket that fits (data.bucket={fits[0]})" if fits else ""
    raise ConfigError(f"the flow prior's grid {grid} (prior.config.patch_size / network) must divide every bucket's latent "
                      f"grid of {cfg.data.path!r}; these do not: {got}. Fix: {fix}{pick}, or a patch size that divides them")


def text_column(cfg: TrainPriorConfig, codec: Any):
    """The codec's text column ``data.text`` (a :class:`~latentflow.format.text.TextColumn`), or None.

    Raises:
        ConfigError: ``data.text`` names no text column of the codec, or the prior is not a flow prior.
    """
    name = cfg.data.text
    if not name:
        return None
    found = {t.name: t for t in codec.text}
    if name not in found or not found[name].hidden_width:
        raise ConfigError(f"data.text={name!r} is not a cached text column of {cfg.data.path!r} (it has {sorted(found) or 'none'}); "
                          "encode with text_encoders=[{name: " + name + ", model: <folder>}] or set data.text=null")
    if cfg.prior.kind != "flow":
        raise ConfigError(f"data.text conditions the flow prior on cached text; prior.kind={cfg.prior.kind!r} takes none")
    return found[name]


def _check_resume_codec(cfg: TrainPriorConfig, prior: PriorModel) -> None:
    """Refuse to resume a checkpoint trained on another codec's latents."""
    path = ckpt.latest_checkpoint(cfg.train.output_dir) if cfg.train.resume else None
    if path is None:
        return
    with fsspec.open(f"{path}/model/config.json", "r") as f:
        old = json.load(f).get("codec_fingerprint", "")
    if old:
        probe = build_prior(prior.kind, {**prior.config.to_dict(), "codec_fingerprint": old})
        probe.check_codec(prior.config.codec_fingerprint)


class StreamedPriorTask(PriorTask):
    """:class:`PriorTask` whose validation rows are read in batches from a ``LatentDataset`` at each
    evaluation (any bucket shapes, nothing held), and whose training labels are range-checked.

    Args:
        prior: the prior.
        val: a ``LatentDataset`` (view) of validation rows, or None.
        val_batch: rows per validation batch.
        labels: pass the ``label`` column (class-conditional priors).
    """

    def __init__(self, prior: torch.nn.Module, val: Any = None, val_batch: int = 256, labels: bool = False,
                 text: str | None = None):
        super().__init__(prior, val_batch=val_batch)
        self.val, self.labels, self.text = val, labels, text

    def loss(self, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        labels, classes = batch.get("labels"), self.model.config.num_classes
        if labels is not None and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise InputError(f"labels must be in [0, data.num_classes={classes}), got: [{int(labels.min())}, {int(labels.max())}]")
        return super().loss(batch, step)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """The prior's validation metric, averaged over every validation row (batched per bucket)."""
        if self.val is None or len(self.val) == 0:
            return {}
        model.eval()
        device = next(model.parameters()).device
        sums: dict[str, float] = {}
        n = 0
        progress = Progress(len(self.val), "validate", unit="sample", mode=None if trainer_rank() == 0 else "off")
        for raw in self.val.iter_batches(self.val_batch, shuffle=False):
            batch = prior_batch(raw, self.labels, self.text)
            rows = len(batch["latents"])
            labels = None if batch["labels"] is None else batch["labels"].to(device)
            mask = {"mask": batch["mask"].to(device)} if batch.get("mask") is not None else {}  # audio padding
            mask.update({k: batch[k].to(device) for k in ("text", "text_mask") if batch.get(k) is not None})
            for k, v in model.validation(batch["latents"].to(device), labels, seed=n, **mask).items():
                sums[k] = sums.get(k, 0.0) + v * rows
            n += rows
            progress.update(rows)
        progress.close()
        model.train()
        return {k: v / n for k, v in sums.items()}


def open_latents(cfg: TrainPriorConfig, rank: int = 0, world: int = 1) -> tuple[PriorData, LatentCacheStream, Any]:
    """The streamed training data of ``cfg.data``: ``(what it is, the training stream, validation rows or None)``.

    Raises:
        ConfigError: ``data.num_classes > 0`` but some rows have no label; or no full batch per worker.
        InputError: the output has no rows.
    """
    from latentflow.read.dataset import LatentDataset
    from latentflow.read.latents import read_codec

    d = cfg.data
    codec = read_codec(d.path, d.storage_options)
    column = "indices" if codec.discrete else "latent"
    fields = (column, "caption") + (("label",) if d.num_classes else ()) + ((d.text,) if d.text else ())
    text_column(cfg, codec)  # a text column the codec records, before reading
    ds = LatentDataset(d.path, normalize=d.normalize and not codec.discrete, storage_options=d.storage_options,
                       resample=d.resample and not codec.discrete and "logvar" in codec.arrays,
                       buckets=[d.bucket] if d.bucket else None, fields=fields)
    if len(ds) == 0:
        raise InputError(f"latent dataset {d.path!r} has no rows" + (f" of bucket {d.bucket!r}" if d.bucket else ""))
    if d.num_classes and not ds.has_field("label"):
        raise ConfigError(f"data.num_classes={d.num_classes} trains a class-conditional prior, but some rows of {d.path!r} "
                          "have no label: set data.num_classes=0 (unconditional) or encode a labeled source")
    buckets = ds.bucket_rows
    largest = max(buckets, key=lambda b: (buckets[b], b))
    data = PriorData(codec.fingerprint, codec.discrete, ds.row_shape(largest, column),
                     codec.quantizer.codebook_size if codec.quantizer else None, buckets,
                     {b: ds.row_shape(b, column) for b in buckets},
                     text_column(cfg, codec).hidden_width if d.text else None)
    prior_config_for(cfg, data)  # refuse a wrong prior kind before reading anything
    check_latent_grids(cfg, data, codec)  # and a patch that does not divide some bucket's grid
    n_val = min(int(round(len(ds) * d.val_fraction)), d.max_val_rows)
    train, val = ds.split(n_val)
    val.resample = False  # validation sees the stored means
    stream = LatentCacheStream(train, d.batch_size, cfg.train.seed, rank, world, labels=d.num_classes > 0,
                               buffer_rows=d.shuffle_buffer, text=d.text)
    if rank == 0:
        print(stream.describe(), flush=True)
    return data, stream, val if n_val else None


def train_prior(cfg: TrainPriorConfig, rank: int = 0, world: int = 1, on_log: Callable[[dict], None] | None = None,
                table: LatentTable | None = None, until: int | None = None) -> dict[str, Any]:
    """Stage 2: train ``cfg.prior`` on the latent output at ``cfg.data.path``, streamed (or on an in-memory ``table``).

    Returns:
        summary with ``history``, validation metrics (``nll_bits_per_token`` or ``flow_loss``) and paths.
    """
    seed_everything(cfg.train.seed * 1000 + rank)
    d = cfg.data
    if table is not None:
        data = PriorData(table.fingerprint, table.discrete, table.latent_shape, table.codebook_size, {"": len(table)})
        prior = build_prior(cfg.prior.kind, prior_config_for(cfg, data))
        train, val = table.split(d.val_fraction)
        stream: Any = LatentStream(train, d.batch_size, cfg.train.seed, d.normalize, d.resample, rank, world)
        batch = table_rows(val, torch.arange(len(val)), d.normalize)
        task: PriorTask = PriorTask(prior, batch["latents"], batch["labels"])
    else:
        data, stream, val_rows = open_latents(cfg, rank, world)
        prior = build_prior(cfg.prior.kind, prior_config_for(cfg, data))
        task = StreamedPriorTask(prior, val_rows, labels=d.num_classes > 0, text=d.text)
    _check_resume_codec(cfg, prior)
    trainer = Trainer(task, stream, cfg.optim, cfg.train, on_log=on_log, device=pick_device(cfg.train.use_gpu))
    history = trainer.fit(until)
    summary: dict[str, Any] = {"steps": trainer.step, "rank": rank, "history": history, "data_position": stream.position(),
                               "buckets": data.buckets}
    if rank == 0 and trainer.step == cfg.train.max_steps:
        summary.update(_finish_prior(trainer, task, data, cfg))
    return summary


def _finish_prior(trainer: Trainer, task: PriorTask, data: PriorData, cfg: TrainPriorConfig) -> dict[str, Any]:
    out = cfg.train.output_dir.rstrip("/")
    final = trainer.eval_model()
    final.save_pretrained(f"{out}/final")
    metrics = task.evaluate(final)
    result: dict[str, Any] = {"metrics": metrics, "final_prior": f"{out}/final"}
    if cfg.data.path:
        result.update(sample_and_decode(final, data, cfg, out))
    from latentflow.training.visualize import read_log, save_loss_curve

    save_loss_curve(read_log(f"{out}/log.jsonl"), f"{out}/loss_curve.png")
    write_json(f"{out}/metrics.json", {"step": trainer.step, **metrics})
    return result


def sample_and_decode(prior: PriorModel, data: PriorData | LatentTable, cfg: TrainPriorConfig, out: str) -> dict[str, str]:
    """Sample latents, decode them with the decoder rebuilt from the codec (which undoes its own
    normalization rule), and write what a human looks at under ``out``: ``samples.png``, a grid of
    images; or, for video latents (codec layout ``CTHW``), ``samples.mp4``, the decoded clips tiled
    into one grid per frame at the clips' frame rate; or, for audio latents (layout ``CT``), ``samples.wav``,
    the decoded waveforms one after another (0.25 s of silence between) at the codec's rate.

    Returns:
        ``{"samples_png": url}``, ``{"samples_mp4": url}`` or ``{"samples_wav": url}``.
    """
    from latentflow.read.latents import decode_latents, read_codec
    from latentflow.read.preview import preview_fps, save_audio_preview, save_video_preview
    from latentflow.training.visualize import save_sample_grid

    prior.check_codec(data.fingerprint)
    s, options = cfg.sample, cfg.data.storage_options  # options of the data; the run's outputs are written as final/ is
    codec = read_codec(cfg.data.path, options)
    gen = torch.Generator().manual_seed(s.seed)
    labels = torch.arange(s.num_samples) % cfg.data.num_classes if cfg.data.num_classes else None
    text, prompts = {}, None
    if cfg.data.text:  # one sample per prompt, embedded by the text encoder the codec records (or read from a cache)
        from latentflow.encode.prompts import prompt_embeddings

        values, mask, prompts = prompt_embeddings(text_column(cfg, codec), s.prompts, s.prompt_cache, options)
        text = {"text": values, "text_mask": mask, "guidance_scale": s.guidance_scale}
    n = len(prompts) if prompts else s.num_samples
    labels = torch.arange(n) % cfg.data.num_classes if cfg.data.num_classes else None
    z = prior.sample(n, labels=labels, generator=gen, temperature=s.temperature, top_k=s.top_k, steps=s.steps, **text)
    decoded = decode_latents(z.cpu(), codec, storage_options=options, normalized=cfg.data.normalize and not data.discrete)
    if codec.layout == "CT":  # (N, channels, samples) waveforms
        return {"samples_wav": save_audio_preview(decoded, f"{out}/samples.wav", codec.processor.sample_rate)}
    if codec.layout == "CTHW":  # (N, 3, T, H, W) clips
        url = save_video_preview(decoded, f"{out}/samples.mp4", fps=preview_fps(cfg.data.path, options),
                                 per_row=min(4, s.num_samples))
        return {"samples_mp4": url}
    save_sample_grid(decoded, f"{out}/samples.png", per_row=min(8, n))
    if prompts:  # one PNG per prompt, and the prompts beside them
        for i in range(n):
            save_sample_grid(decoded[i:i + 1], f"{out}/samples/prompt_{i:03d}.png", per_row=1)
        write_json(f"{out}/samples/prompts.json", {"prompts": prompts, "guidance_scale": s.guidance_scale})
        return {"samples_png": f"{out}/samples.png", "prompt_samples": f"{out}/samples"}
    return {"samples_png": f"{out}/samples.png"}


def evaluate_prior(prior_path: str, latents_path: str, storage_options: dict | None = None,
                   normalize: bool = True, batch_size: int = 256) -> dict[str, float]:
    """Validation metric of a saved prior over every row of a latent dataset (streamed);
    refuses a dataset of another codec (:class:`~latentflow.errors.CodecMismatchError`)."""
    from latentflow.read.dataset import LatentDataset
    from latentflow.read.latents import read_codec

    prior = load_prior(prior_path)
    codec = read_codec(latents_path, storage_options)
    labels = prior.config.num_classes > 0
    fields = ("indices" if codec.discrete else "latent",) + (("label",) if labels else ())
    ds = LatentDataset(latents_path, normalize=normalize and not codec.discrete, storage_options=storage_options,
                       expected_fingerprint=prior.config.codec_fingerprint or None, fields=fields)
    return StreamedPriorTask(prior, ds, batch_size, labels).evaluate(prior)


__all__ = ["train_prior", "evaluate_prior", "sample_and_decode", "prior_config_for", "open_latents", "PriorData",
           "StreamedPriorTask"]
