"""``EncodeJobConfig``: one typed config for an encode job, loaded from YAML plus ``key=value`` overrides.

Example::

    cfg = EncodeJobConfig.from_yaml("configs/encode/default.yaml", ["batch_size=4", "source.urls=[a.tar]"])
    cfg.output        # "./outputs/default"

Nothing in the YAML is executed; unknown keys (at any depth) are errors that name the key.
Storage options come from the config or, when absent there, from the JSON in
``$LATENTFLOW_STORAGE_OPTIONS``; they are used for I/O and never written to outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from latentflow import config_cli
from latentflow.config_cli import load_job_config
from latentflow.configuration import Config, check_choice, check_positive
from latentflow.encode.text_config import TextEncoderConfig
from latentflow.errors import ConfigError
from latentflow.format.codec import StoreConfig
from latentflow.media.config import AudioProcessorConfig, AudioTrackConfig, ImageProcessorConfig, VideoProcessorConfig
from latentflow.sources.shards import SourceConfig, resolve_storage_options

DTYPES = ("fp32", "bf16", "fp16")
FORMATS = ("parquet", "zarr")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TextPoolConfig(Config):
    """A pool of its own for the text encoders (``text_pool``): each caption block leaves the encoder
    actors for these actors, which hold the text encoders resident, on their own CPU/GPU reservation
    (a 4.7B-parameter T5 on a GPU of its own while the VAE actors share another, or a CPU pool beside
    GPU encoders). Without it the text encoders run inside each encoder actor.

    Attributes:
        num_actors: text-encoder actors (each loads every text encoder once).
        num_cpus: logical CPUs reserved per actor; None: 1 with a GPU, else 0.5 per thread.
        num_gpus: GPUs (a fraction shares one) reserved per actor; 0 runs them on CPU.
        torch_threads: intra-op threads per actor; None: 1 on CPU (beside the encoder actors), torch's default on GPU.
    """

    num_actors: int = 1
    num_cpus: float | None = None
    num_gpus: float = 0.0
    torch_threads: int | None = None

    def validate(self) -> None:
        name = type(self).__name__
        check_positive(name, "num_actors", self.num_actors)
        check_positive(name, "num_gpus", self.num_gpus, allow_zero=True)
        if self.num_cpus is not None:
            check_positive(name, "num_cpus", self.num_cpus)
        if self.torch_threads is not None:
            check_positive(name, "torch_threads", self.torch_threads)

    @property
    def threads(self) -> int | None:
        return self.torch_threads if self.torch_threads or self.num_gpus else 1

    @property
    def cpus(self) -> float:
        """Logical CPUs each actor reserves."""
        if self.num_cpus is not None:
            return self.num_cpus
        return 1.0 if self.num_gpus else 0.5 * (self.threads or 1)


@dataclass
class EncodeJobConfig(Config):
    """Everything an encode job needs.

    Attributes:
        model: checkpoint to encode with: a local directory, an fsspec URL (``s3://...``),
            a name under ``models/`` or a Hugging Face hub id (any diffusers autoencoder folder too).
        model_subfolder: inside ``model`` (``"vae"`` of a diffusers pipeline root).
        model_variant: weights variant (``"fp16"`` reads ``diffusion_pytorch_model.fp16.safetensors``).
        model_revision: hub revision (branch, tag or commit); the codec pins the commit it resolved to.
        output: output directory (local path or fsspec URL).
        source: where the input shards are (:class:`~latentflow.sources.shards.SourceConfig`).
        processor: how images become pixel tensors (:class:`ImageProcessorConfig`).
        video: set to encode videos: how they become clips (:class:`VideoProcessorConfig`); each
            clip is a row. The source then reads video media only (``source.media=video``).
        audio: set to encode audio: how files (or videos' audio tracks) become segments
            (:class:`AudioProcessorConfig`); each segment is a row (``source.media=audio``).
        store: what is stored per sample (:class:`StoreConfig`).
        dtype: compute dtype of the encoder: ``fp32``, ``bf16`` or ``fp16``.
        channels_last: run the encoder in channels-last memory format.
        batch_size: images per encoder forward (batches never mix buckets).
        num_actors: encoder actors in the pool; None -> ``actors_per_gpu`` per GPU on GPU
            clusters, else one single-threaded actor per CPU (at most 8; see
            ``jobs.placement.pool_shape``).
        actors_per_gpu: encoder actors sharing each GPU (each reserves 1/n of it), so the GPU
            computes for one while Ray hands blocks to and from another.
        actor_num_cpus: logical CPUs reserved per encoder actor; None -> 1 per GPU actor, half
            a CPU per thread on CPU actors, less where needed so that, however Ray spreads the
            actors, some NODE keeps a read's CPUs free (a pool that leaves none hangs Ray Data).
        torch_threads: intra-op threads per actor; None -> the cores / num_actors.
        preprocess_num_cpus: logical CPUs per read+preprocess task; None -> 1, or half a CPU where
            no node has 2 (``jobs.placement.pool_shape`` checks that reads fit beside the actors).
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        formats: sinks to write: ``parquet`` and/or ``zarr``.
        max_error_rate: the job exits non-zero when failed samples (or failed shards) exceed this fraction.
        shard_retries: extra attempts to read a shard before it is recorded as failed.
        overwrite: replace an output written by a different model/processor instead of refusing.
        storage_options: fsspec options for the model and the output (credentials: used, never stored).
        shared_filesystem: local paths (source, output) are on a filesystem every Ray node sees
            (NFS, a shared mount). Without it a job refuses local paths on a cluster of more than
            one node: each node would read or write its own disk.
        text_encoders: text encoders whose outputs are cached beside the latents, one column each
            (:class:`~latentflow.encode.text.TextEncoderConfig`): ``text_encoders=[{name: t5, model: <folder>}]``.
            Each row's caption is encoded (identical captions of a shard once) and stored as ``<name>``
            (the caption's own tokens, (L, D)), ``<name>_length``, ``<name>_truncated`` (and ``<name>_pooled``);
            a blank caption follows the entry's ``empty_caption`` rule, a caption that is not UTF-8 is an error row.
        text_pool: run the text encoders in a pool of their own (:class:`TextPoolConfig`:
            ``text_pool={num_actors: 1, num_gpus: 1}``) instead of inside each encoder actor. Needs ``text_encoders``.
        refresh_captions: before encoding, read the captions of the committed shards from the source again and
            recompute the text columns of the rows whose caption changed (only the new captions; latents are kept,
            nothing is decoded): the rerun to make after editing captions. Needs ``text_encoders``.
        audio_track: with ``video``: the audio of every clip's exact time span (by pts), encoded by the audio
            model it names and stored in the clip's row (:class:`~latentflow.media.config.AudioTrackConfig`):
            ``audio_track={model: audio-vae-tiny}``. Needs ``video.fps``.
        connect_timeout_s: seconds to wait for the Ray cluster named by ``$RAY_ADDRESS`` to answer before the
            job fails with one line naming it (a cluster that is gone would otherwise hang the job).
        placement_timeout_s: a job whose read, encode or write tasks stay unplaced this long
            (the cluster has no node with room for them) fails with the cluster's shape instead
            of waiting forever; 0 waits forever.
    """

    model: str = ""
    model_subfolder: str | None = None
    model_variant: str | None = None
    model_revision: str | None = None
    output: str = "./outputs/default"
    source: SourceConfig = field(default_factory=SourceConfig)
    processor: ImageProcessorConfig = field(default_factory=ImageProcessorConfig)
    video: VideoProcessorConfig | None = None
    audio: AudioProcessorConfig | None = None
    store: StoreConfig = field(default_factory=StoreConfig)
    dtype: str = "fp32"
    channels_last: bool = False
    batch_size: int = 8
    num_actors: int | None = None
    actors_per_gpu: int = 2
    actor_num_cpus: float | None = None
    torch_threads: int | None = None
    preprocess_num_cpus: float | None = None
    device: str = "auto"
    formats: tuple[str, ...] = FORMATS
    max_error_rate: float = 0.05
    shard_retries: int = 2
    overwrite: bool = False
    storage_options: dict[str, Any] | None = None
    shared_filesystem: bool = False
    placement_timeout_s: float = 120.0
    connect_timeout_s: float = 30.0
    text_encoders: list[TextEncoderConfig] = field(default_factory=list)
    audio_track: AudioTrackConfig | None = None
    text_pool: TextPoolConfig | None = None
    refresh_captions: bool = False

    def validate(self) -> None:
        name = type(self).__name__
        if not self.model:
            raise ConfigError(f"{name}.model must name a checkpoint (directory, URL or models/ name), got: {self.model!r}")
        if not self.output:
            raise ConfigError(f"{name}.output must be a path or URL, got: {self.output!r}")
        check_choice(name, "dtype", self.dtype, DTYPES)
        check_choice(name, "device", self.device, DEVICES)
        for fmt in self.formats:
            check_choice(name, "formats[]", fmt, FORMATS)
        if not self.formats:
            raise ConfigError(f"{name}.formats must name at least one of {list(FORMATS)}, got: []")
        check_positive(name, "batch_size", self.batch_size)
        if self.num_actors is not None:
            check_positive(name, "num_actors", self.num_actors)
        check_positive(name, "actors_per_gpu", self.actors_per_gpu)
        if self.preprocess_num_cpus is not None:
            check_positive(name, "preprocess_num_cpus", self.preprocess_num_cpus)
        check_positive(name, "shard_retries", self.shard_retries, allow_zero=True)
        if self.actor_num_cpus is not None:
            check_positive(name, "actor_num_cpus", self.actor_num_cpus)
        if self.torch_threads is not None:
            check_positive(name, "torch_threads", self.torch_threads)
        if self.video is not None and self.source.media is None:
            self.source = self.source.replace(media="video")  # a video job reads the video members only
        if self.video is not None and self.source.media not in (None, "video"):
            raise ConfigError(f"{name}.video encodes video clips but source.media={self.source.media!r}; "
                              "set source.media=video or drop the video section")
        if self.audio is not None and self.video is not None:
            raise ConfigError(f"{name} sets both video and audio; one job encodes one modality (drop one section)")
        if self.audio is not None and self.source.media is None:
            self.source = self.source.replace(media="audio")  # an audio job reads audio files and videos' audio tracks
        if self.audio is not None and self.source.media != "audio":
            raise ConfigError(f"{name}.audio encodes audio segments but source.media={self.source.media!r}; "
                              "set source.media=audio or drop the audio section")
        if self.processor.flip:  # the encoder builds flipped views itself when store.flip asks for them
            raise ConfigError(f"{name}.processor.flip is ignored by the encode job; to encode flipped views set "
                              f"store.flip=true (and processor.flip=false), got: processor.flip=True")
        check_positive(name, "placement_timeout_s", self.placement_timeout_s, allow_zero=True)
        check_positive(name, "connect_timeout_s", self.connect_timeout_s)
        if self.audio_track is not None and self.video is None:
            raise ConfigError(f"{name}.audio_track cuts the audio of video clips; set a video section, or encode audio files "
                              "with an audio section instead")
        if self.audio_track is not None and not self.video.fps:
            raise ConfigError(f"{name}.audio_track needs video.fps (each clip's audio span is num_frames / fps seconds); "
                              "set video.fps, e.g. video.fps=25")
        if self.text_pool is not None and not self.text_encoders:
            raise ConfigError(f"{name}.text_pool runs the text encoders in their own actors; set text_encoders too (or drop text_pool)")
        if self.refresh_captions and not self.text_encoders:
            raise ConfigError(f"{name}.refresh_captions recomputes cached text-encoder columns; set text_encoders too")
        names = [t.name for t in self.text_encoders] + ([self.audio_track.name] if self.audio_track else [])
        taken = {"latent", "logvar", "indices", "key", "shard", "bucket", "caption", "label", "json"}
        clash = sorted({n for n in names if names.count(n) > 1} | (set(names) & taken))
        if clash:
            raise ConfigError(f"{name}.text_encoders and audio_track: each name is a column of its own and must be unique and not one of "
                              f"{sorted(taken)}, got: {names}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"{name}.max_error_rate must be in [0, 1], got: {self.max_error_rate}")

    # ---- dict / YAML ---------------------------------------------------------
    def to_public_dict(self) -> dict[str, Any]:
        """``to_dict`` without storage options anywhere (safe to log or write)."""
        out = self.to_dict()
        out.pop("storage_options", None)
        out["source"] = {k: v for k, v in out["source"].items() if k != "storage_options"}
        return out


    @classmethod
    def from_yaml(cls, path: str, overrides: list[str] | None = None) -> "EncodeJobConfig":
        """Load a YAML job file and apply ``key=value`` overrides (dotted keys reach into sections).

        Args:
            path: the YAML file.
            overrides: e.g. ``["batch_size=4", "processor.resolution=64", "source.urls=[s3://b/x.tar]"]``;
                values are parsed as YAML scalars/lists.

        Returns:
            The validated config.
        """
        return load_job_config(cls, path, overrides)

    @classmethod
    def from_yaml_data(cls, data: Any, overrides: list[str] | None = None, where: str = "the config") -> "EncodeJobConfig":
        """:meth:`from_yaml` on data already read from YAML (``where`` names it in errors)."""
        return load_job_config(cls, where, overrides, data=config_cli.check_mapping(data, where))

    @property
    def processor_config(self) -> ImageProcessorConfig | VideoProcessorConfig | AudioProcessorConfig:
        """The processor this job runs: ``video`` or ``audio`` when set, else ``processor``."""
        if self.audio is not None:
            return self.audio
        return self.video if self.video is not None else self.processor

    def resolved_storage_options(self) -> dict[str, Any]:
        """Storage options from the config, else from ``$LATENTFLOW_STORAGE_OPTIONS`` (JSON), else ``{}``."""
        return resolve_storage_options(self.storage_options)

    def source_storage_options(self) -> dict[str, Any]:
        """The source's own storage options, falling back to the job's."""
        own = self.source.storage_options
        return dict(own) if own is not None else self.resolved_storage_options()


def apply_overrides(data: dict[str, Any], overrides: list[str], config_class: type | None = None) -> dict[str, Any]:
    """:func:`latentflow.config_cli.apply_overrides`, typed against ``config_class`` (default: this job's config)."""
    return config_cli.apply_overrides(data, overrides, config_class or EncodeJobConfig)
