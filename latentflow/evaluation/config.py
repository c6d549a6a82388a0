"""``EvalJobConfig``: the typed config of ``jobs/evaluate.py``, loaded from YAML plus ``key=value`` overrides.

Example::

    cfg = EvalJobConfig.from_yaml("configs/eval/photos.yaml", ["max_images=16"])
    cfg.models        # ["models/transvae-tiny-photos", "/path/to/other"]

Unknown keys (at any depth) are errors naming the key; nothing in the YAML is executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from latentflow.config_cli import load_job_config
from latentflow.configuration import Config, check_choice, check_positive
from latentflow.errors import ConfigError
from latentflow.media.config import ImageProcessorConfig
from latentflow.sources.shards import SourceConfig, resolve_storage_options


@dataclass
class EvalJobConfig(Config):
    """Everything an evaluation run needs.

    Attributes:
        models: checkpoints to compare: local directories, fsspec URLs or names under ``models/``.
        output: directory for ``report.json`` and the PNG plots (local path or fsspec URL).
        source: the images (:class:`~latentflow.sources.shards.SourceConfig`).
        processor: how images become pixels (:class:`ImageProcessorConfig`); no buckets, so
            every model sees the same crops.
        batch_size: images per model forward.
        max_images: evaluate at most this many images (in shard order); None for all.
        actor_num_cpus: logical CPUs reserved by the model actor (fractional keeps reads going).
        torch_threads: intra-op threads in the actor; None leaves torch's default.
        grid_images: images shown in the reconstruction grid.
        histogram_samples: latent values kept per channel per batch for the histograms.
        lpips_weights: local ``.safetensors`` weights of an LPIPS network; LPIPS is skipped
            (with a note in the report) when None, missing, or no LPIPS implementation is installed.
        device: ``cpu`` or ``cuda``: where the models run.
        seed: seeds the histogram subsampling.
        storage_options: fsspec options for the checkpoints and the output; None means
            ``$LATENTFLOW_STORAGE_OPTIONS`` (JSON) or fsspec defaults. Never written out.
    """

    models: list[str] = field(default_factory=list)
    output: str = "./outputs/eval"
    source: SourceConfig = field(default_factory=lambda: SourceConfig(format="folder", urls=["./images"]))
    processor: ImageProcessorConfig = field(default_factory=lambda: ImageProcessorConfig(resolution=64))
    batch_size: int = 8
    max_images: int | None = None
    actor_num_cpus: float = 0.5
    torch_threads: int | None = None
    grid_images: int = 4
    histogram_samples: int = 256
    lpips_weights: str | None = None
    device: str = "cpu"
    seed: int = 0
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    def validate(self) -> None:
        name = type(self).__name__
        if not self.models:
            raise ConfigError(f"{name}.models must name at least one checkpoint, got: []")
        if not self.output:
            raise ConfigError(f"{name}.output must be a path or URL, got: {self.output!r}")
        check_positive(name, batch_size=self.batch_size, actor_num_cpus=self.actor_num_cpus, grid_images=self.grid_images,
                       histogram_samples=self.histogram_samples, max_images=self.max_images)
        check_choice(name, "device", self.device, ("cpu", "cuda"))
        if self.processor.buckets:
            raise ConfigError(f"{name}.processor.buckets must be false: evaluation compares models on equal-size crops")

    def to_public_dict(self) -> dict[str, Any]:
        """``to_dict`` without storage options (safe to write into the report)."""
        out = self.to_dict()
        out.pop("storage_options", None)
        out["source"] = self.source.to_public_dict()
        return out

    def fs_options(self) -> dict[str, Any]:
        """Storage options for checkpoints and output: the config's, else ``$LATENTFLOW_STORAGE_OPTIONS``."""
        return resolve_storage_options(self.storage_options)


    @classmethod
    def from_yaml(cls, path: str, overrides: list[str] | None = None) -> "EvalJobConfig":
        """Load a YAML file, apply dotted ``key=value`` overrides (typed against this class), validate."""
        return load_job_config(cls, path, overrides)
