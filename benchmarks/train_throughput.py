"""python benchmarks/train_throughput.py [--encoder sd1|tiny] [--resolution 64] [--batch-size 4] [--steps 10]

Stage 2 exists because encoding is expensive: this measures a flow prior's training
steps/s two ways, with the same encoder, the same images, the same prior and the
same optimizer step:

1. cached: latents written once by the encode job's data layer (Parquet + Zarr with codec
   metadata), read back with ``load_latent_table`` and batched by ``LatentStream``
   (resampled from the stored mean/logvar, normalized with the codec's scaling);
2. on the fly: images streamed from the WebDataset shards through the same processor,
   encoded by the frozen encoder every step (posterior sample), normalized the same way.

Prints both rates, the speed-up (cached / on the fly), and the one-off encoding time
with the number of steps after which caching has paid for itself. The encoder is the
Stable Diffusion VAE architecture (``sd1``, random weights: speed does not depend on
them) or a tiny VAE. Rates are measured in one run, so the ratio holds on a shared CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", choices=["sd1", "tiny"], default="sd1")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode (after 2 warm-up steps)")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--per-shard", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    return p.parse_args()


def build_encoder(kind: str):
    torch.manual_seed(0)
    if kind == "sd1":
        from latentflow.models.autoencoder_kl import AutoencoderKLModel, sd1

        return AutoencoderKLModel(sd1()).eval()
    from latentflow.models.vae import VariationalAutoencoderConfig, VariationalAutoencoderModel

    return VariationalAutoencoderModel(VariationalAutoencoderConfig(block_out_channels=(32, 64, 64), latent_channels=4)).eval()


def encode_cache(model, urls: list[str], root: Path, resolution: int) -> tuple[str, float]:
    """The encode job's plain loop (data layer): shards -> processor -> encoder -> Parquet + Zarr. Returns (dir, seconds)."""
    from latentflow.encode.local import encode_locally
    from latentflow.format.codec import StoreConfig
    from latentflow.media.config import ImageProcessorConfig
    from latentflow.sources.shards import SourceConfig

    model_dir, out = str(root / "encoder"), str(root / "latents")
    model.save_pretrained(model_dir)
    start = time.perf_counter()
    encode_locally(model, SourceConfig(format="webdataset", urls=urls), out, ImageProcessorConfig(resolution=resolution),
                   StoreConfig(logvar=True), model_ref=model_dir, batch_size=8, note="train_throughput")
    return out, time.perf_counter() - start


def make_prior(latent_shape: tuple[int, ...]):
    from latentflow.priors.flow import FlowConfig, FlowPrior

    torch.manual_seed(0)
    prior = FlowPrior(FlowConfig(latent_shape=latent_shape, patch_size=2, hidden_size=128, num_layers=4, num_heads=4))
    return prior, torch.optim.AdamW(prior.parameters(), lr=1e-4)


def timed(next_latents, prior, opt, steps: int) -> float:
    """Steps/s of: get a batch of latents, prior loss, backward, AdamW step (2 untimed warm-up steps)."""
    for i in range(steps + 2):
        if i == 2:
            start = time.perf_counter()
        loss, _ = prior.loss(next_latents())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.samples
    from latentflow.training.data import LatentStream, build_image_stream, load_latent_table
    from tests.samples import write_sample_webdataset

    root = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    urls = write_sample_webdataset(str(root / "shards"), num_shards=args.shards, samples_per_shard=args.per_shard,
                                   min_side=args.resolution, max_side=2 * args.resolution, seed=0)
    encoder = build_encoder(args.encoder)
    cache, encode_seconds = encode_cache(encoder, urls, root, args.resolution)
    table = load_latent_table(cache)
    cached_stream = LatentStream(table, args.batch_size, seed=0, normalize=True, resample=True)
    prior, opt = make_prior(tuple(table.latents.shape[1:]))
    cached = timed(lambda: cached_stream.next_batch()["latents"], prior, opt, args.steps)

    images = build_image_stream({"format": "webdataset", "urls": urls}, {"resolution": args.resolution},
                                encoder.downsample_factor, args.batch_size, seed=0)

    def on_the_fly() -> torch.Tensor:
        with torch.inference_mode():
            z = encoder.encode(images.next_batch()["pixel_values"]).latent_dist.sample()
        return table.codec.normalization.normalize(z.clone())

    prior, opt = make_prior(tuple(table.latents.shape[1:]))
    fly = timed(on_the_fly, prior, opt, args.steps)
    per_step_saving = 1 / fly - 1 / cached
    result = {"encoder": args.encoder, "resolution": args.resolution, "batch_size": args.batch_size,
              "latent_shape": list(table.latents.shape[1:]), "threads": torch.get_num_threads(),
              "cached_steps_per_s": round(cached, 3), "on_the_fly_steps_per_s": round(fly, 3),
              "speedup": round(cached / fly, 2), "encode_once_s": round(encode_seconds, 2),
              "images_cached": len(table),
              "break_even_steps": round(encode_seconds / per_step_saving, 1) if per_step_saving > 0 else None}
    print(json.dumps(result, indent=1))
    print(f"speed-up (cached latents vs encoding on the fly): {cached / fly:.1f}x")


if __name__ == "__main__":
    main()
