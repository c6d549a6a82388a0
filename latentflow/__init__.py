"""latentflow: one contract for autoencoder-family models, and exactly-once latent caches.

The public API is flat and lazy: ``latentflow.AutoModel`` imports only what it
needs, so Ray workers and CLI start fast and one family's import cost is paid
only by its users.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from latentflow.version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # contract
    "LatentConfig": "latentflow.configuration",
    "LatentModel": "latentflow.modeling",
    "normalize_latents": "latentflow.modeling",
    "Normalization": "latentflow.normalization",
    "denormalize_latents": "latentflow.modeling",
    "AutoConfig": "latentflow.auto",
    "AutoModel": "latentflow.auto",
    "register": "latentflow.auto",
    # outputs
    "DiagonalGaussian": "latentflow.outputs",
    "EncoderOutput": "latentflow.outputs",
    "VariationalEncoderOutput": "latentflow.outputs",
    "QuantizedEncoderOutput": "latentflow.outputs",
    "MaskedEncoderOutput": "latentflow.outputs",
    "QuantizerOutput": "latentflow.outputs",
    "DecoderOutput": "latentflow.outputs",
    "AutoencoderOutput": "latentflow.outputs",
    "MaskedAutoencoderOutput": "latentflow.outputs",
    # errors
    "LatentflowError": "latentflow.errors",
    "ConfigError": "latentflow.errors",
    "InputError": "latentflow.errors",
    "CheckpointError": "latentflow.errors",
    "NotSupportedError": "latentflow.errors",
    "ShardReadError": "latentflow.errors",
    "CodecMismatchError": "latentflow.errors",
    # data path: sources -> media -> encode -> store -> format <- read
    "SourceConfig": "latentflow.sources.shards",
    "SampleError": "latentflow.sources.records",
    "ImageProcessor": "latentflow.media.image",
    "ImageProcessorConfig": "latentflow.media.config",
    "VideoProcessorConfig": "latentflow.media.config",
    "AudioProcessorConfig": "latentflow.media.config",
    "AudioProcessor": "latentflow.media.audio_processor",
    "LatentEncoder": "latentflow.encode.encoder",
    "build_codec": "latentflow.encode.codec_builder",
    "encode_locally": "latentflow.encode.local",
    "ShardWriter": "latentflow.store.writer",
    "StoreConfig": "latentflow.format.codec",
    "Codec": "latentflow.format.codec",
    "ModelRef": "latentflow.format.codec",
    "CommitMarker": "latentflow.format.marker",
    "OutputState": "latentflow.format.state",
    "load_latents": "latentflow.read.latents",
    "decode_latents": "latentflow.read.latents",
    "read_codec": "latentflow.read.latents",
    "LatentDataset": "latentflow.read.dataset",
    "BucketBatchSampler": "latentflow.read.dataset",
    "save_video_preview": "latentflow.read.preview",
    "save_audio_preview": "latentflow.read.preview",
    "preview_fps": "latentflow.read.preview",
    # task pipelines (transformers' shape): latentflow.pipeline("reconstruct", model="kl-f8")
    "pipeline": "latentflow.pipelines.base",
    "Pipeline": "latentflow.pipelines.base",
    # the Ray encode job
    "EncodeJobConfig": "latentflow.jobs.config",
    "EncodeSummary": "latentflow.jobs.runner",
    "run_encode_job": "latentflow.jobs.runner",
    # model families
    "AutoencoderConfig": "latentflow.models.autoencoder",
    "AutoencoderModel": "latentflow.models.autoencoder",
    "VariationalAutoencoderConfig": "latentflow.models.vae",
    "VariationalAutoencoderModel": "latentflow.models.vae",
    "BetaVAEConfig": "latentflow.models.vae",
    "BetaVAEModel": "latentflow.models.vae",
    "MaskedAutoencoderConfig": "latentflow.models.mae",
    "MaskedAutoencoderModel": "latentflow.models.mae",
    "AutoencoderKLConfig": "latentflow.models.autoencoder_kl",
    "AutoencoderKLModel": "latentflow.models.autoencoder_kl",
    "TilingConfig": "latentflow.models.autoencoder_kl",
    "CausalVideoAutoencoderKLConfig": "latentflow.models.causal_video_vae",
    "CausalVideoAutoencoderKLModel": "latentflow.models.causal_video_vae",
    "TransVAEConfig": "latentflow.models.transvae",
    "TransVAEModel": "latentflow.models.transvae",
    "transvae_tiny": "latentflow.models.transvae",
    "transvae_base": "latentflow.models.transvae",
    "transvae_large": "latentflow.models.transvae",
    "VQAutoencoderConfig": "latentflow.models.vq_autoencoder",
    "VectorQuantizedAutoencoderModel": "latentflow.models.vq_autoencoder",
    "VQVAE2Config": "latentflow.models.vq_autoencoder",
    "VQVAE2Model": "latentflow.models.vq_autoencoder",
    "VQVAE2Tokens": "latentflow.models.vq_autoencoder",
    "TiTokConfig": "latentflow.models.titok",
    "TiTokModel": "latentflow.models.titok",
    "MagvitV2Config": "latentflow.models.magvit2",
    "MagvitV2Model": "latentflow.models.magvit2",
    # quantizers
    "Quantizer": "latentflow.quantizers.base",
    "QuantizerConfig": "latentflow.quantizers.base",
    "quantizer_from_config": "latentflow.quantizers.base",
    "index_dtype_for": "latentflow.quantizers.base",
    "numpy_index_dtype_for": "latentflow.quantizers.base",
    "VQConfig": "latentflow.quantizers.vq",
    "VectorQuantizer": "latentflow.quantizers.vq",
    "GumbelConfig": "latentflow.quantizers.gumbel",
    "GumbelQuantizer": "latentflow.quantizers.gumbel",
    "ResidualVQConfig": "latentflow.quantizers.residual",
    "ResidualVectorQuantizer": "latentflow.quantizers.residual",
    "GroupedVQConfig": "latentflow.quantizers.grouped",
    "GroupedVectorQuantizer": "latentflow.quantizers.grouped",
    "FSQConfig": "latentflow.quantizers.fsq",
    "FiniteScalarQuantizer": "latentflow.quantizers.fsq",
    "LFQConfig": "latentflow.quantizers.lfq",
    "LookupFreeQuantizer": "latentflow.quantizers.lfq",
    "BSQConfig": "latentflow.quantizers.bsq",
    "BinarySphericalQuantizer": "latentflow.quantizers.bsq",
    # metrics
    "psnr": "latentflow.metrics",
    "ssim": "latentflow.metrics",
    "codebook_stats": "latentflow.metrics",
    "CodeHistogram": "latentflow.metrics",
    "ChannelStats": "latentflow.metrics",
    # trainer stage
    "TrainAutoencoderConfig": "latentflow.training.config",
    "TrainPriorConfig": "latentflow.training.config",
    "Trainer": "latentflow.training.trainer",
    "train_autoencoder": "latentflow.training.entrypoints",
    "train_prior": "latentflow.training.prior_stage",
    "run_distributed": "latentflow.training.distributed",
    "GPTPrior": "latentflow.priors.gpt",
    "MaskGITPrior": "latentflow.priors.maskgit",
    "FlowPrior": "latentflow.priors.flow",
    "load_prior": "latentflow.priors.base",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'latentflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from latentflow.auto import AutoConfig, AutoModel, register  # noqa: F401
    from latentflow.configuration import LatentConfig  # noqa: F401
    from latentflow.modeling import LatentModel  # noqa: F401
