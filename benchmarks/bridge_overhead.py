"""The diffusers bridge's encode time against calling diffusers directly: same weights, same input, one run.

    .venv/bin/python benchmarks/bridge_overhead.py --reps 15 --threads 1

For each class, a random-weight model of a realistic width (not a released checkpoint's size, so
it runs on a laptop CPU) is saved by diffusers and loaded twice: by diffusers (``Class.from_pretrained``)
and by latentflow (``AutoModel.from_pretrained``, the bridge). Each rep times, in alternating order,

- direct: ``vae.encode(x)`` and the latents a user takes from it (``latent_dist.mode()``, ``.latent``,
  ``.latents``; VQModel's quantized by ``vae.quantize``; video classes get the one-frame clip
  ``x[:, :, None]`` that Qwen-Image passes);
- bridge: ``model.encode(x).latents`` (input checks, the clip reshape, the ``LatentModel`` outputs);

under ``torch.inference_mode``, after two warm-up calls. It prints the medians,
``overhead = median(bridge) / median(direct) - 1`` and ``paired``, the median over reps of
``bridge / direct - 1`` within the rep (drift of a shared machine cancels), and ``extra us``, the
median of ``bridge - direct`` within a rep: the bridge's fixed cost per call; target <= 2%.
``wrapper us`` times the bridge's own work alone (diffusers' encode replaced by a stub returning a
precomputed output, 2001 calls each way), ``wrapper %`` that cost over the diffusers median: the
overhead free of the noise a loaded machine puts on end-to-end medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

CONFIGS: dict[str, dict] = {
    "AutoencoderTiny": dict(),  # TAESD's own (released) architecture
    "AutoencoderDC": dict(latent_channels=32, encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
                          decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(32, 64, 128),
                          decoder_block_out_channels=(32, 64, 128), encoder_layers_per_block=(1, 1, 1), decoder_layers_per_block=(1, 1, 1),
                          encoder_qkv_multiscales=((), (), (5,)), decoder_qkv_multiscales=((), (), (5,)), scaling_factor=0.41407),
    "AutoencoderKLFlux2": dict(block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                               up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=32),
    "AutoencoderKLQwenImage": dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 2], num_res_blocks=1, temperal_downsample=[False, True]),
    "VQModel": dict(block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4, num_vq_embeddings=1024),
}


def direct_latents(vae, x: torch.Tensor, video: bool) -> torch.Tensor:
    out = vae.encode(x[:, :, None] if video else x)
    if hasattr(out, "latent_dist"):
        return out.latent_dist.mode()
    if hasattr(out, "latent"):
        return out.latent
    return vae.quantize(out.latents)[0] if hasattr(vae, "quantize") else out.latents  # VQModel: the quantized latents


def wrapper_cost(vae, model, x: torch.Tensor, video: bool, reps: int = 2001) -> float:
    """Seconds the bridge adds per call beyond diffusers' encode: both paths run with ``vae.encode`` replaced by
    a stub that returns a precomputed output, so only the wrapping (checks, reshape, outputs) is timed."""
    stubs = {"encode": vae.encode(x[:, :, None] if video else x)}
    if hasattr(vae, "quantize"):  # VQModel: its codebook search is diffusers' compute too
        stubs["quantize"] = vae.quantize(stubs["encode"].latents)
    for module in (vae, model.vae):
        for name, cached in stubs.items():
            object.__setattr__(module, name, lambda *args, _c=cached, **kwargs: _c)  # shadows the method / submodule
    try:
        bridge = [time_once(lambda: model.encode(x).latents) for _ in range(reps)]
        direct = [time_once(lambda: direct_latents(vae, x, video)) for _ in range(reps)]
    finally:
        for module in (vae, model.vae):
            for name in stubs:
                object.__delattr__(module, name)  # the real one shows again
    return max(0.0, statistics.median(bridge) - statistics.median(direct))


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, batch: int, size: int, reps: int) -> dict[str, float]:
    import diffusers

    from latentflow.auto import AutoModel

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        getattr(diffusers, name)(**CONFIGS[name]).save_pretrained(tmp)
        vae = getattr(diffusers, name).from_pretrained(tmp).eval()
        model = AutoModel.from_pretrained(tmp).eval()
    video = bool(model.temporal_downsample_factor)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    direct = lambda: direct_latents(vae, x, video)  # noqa: E731
    bridge = lambda: model.encode(x).latents  # noqa: E731
    times = {"direct": [], "bridge": []}
    with torch.inference_mode():
        assert torch.equal(direct().squeeze(2) if video else direct(), bridge().squeeze(2) if video else bridge())
        for fn in (direct, bridge, direct, bridge):  # warm-up
            fn()
        for rep in range(reps):
            order = (("direct", direct), ("bridge", bridge)) if rep % 2 == 0 else (("bridge", bridge), ("direct", direct))
            for key, fn in order:
                times[key].append(time_once(fn))
        wrapper = wrapper_cost(vae, model, x, video)
    d, b = statistics.median(times["direct"]), statistics.median(times["bridge"])
    paired = statistics.median(tb / td for tb, td in zip(times["bridge"], times["direct"]))  # drift cancels within a rep
    extra = statistics.median(tb - td for tb, td in zip(times["bridge"], times["direct"]))  # the bridge's fixed cost
    return {"direct_ms": d * 1e3, "bridge_ms": b * 1e3, "overhead": b / d - 1, "paired": paired - 1, "extra_us": extra * 1e6,
            "wrapper_us": wrapper * 1e6, "wrapper_share": wrapper / d}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--classes", nargs="*", default=list(CONFIGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"encode of {args.batch} x 3 x {args.size} x {args.size} on CPU, {args.threads} thread(s), median of {args.reps} reps")
    print(f"{'class':<26}{'diffusers ms':>14}{'bridge ms':>12}{'overhead':>11}{'paired':>10}"
          f"{'extra us':>10}{'wrapper us':>12}{'wrapper %':>11}")
    for name in args.classes:
        r = bench(name, args.batch, args.size, args.reps)
        print(f"{name:<26}{r['direct_ms']:>14.2f}{r['bridge_ms']:>12.2f}{r['overhead']:>+11.2%}{r['paired']:>+10.2%}{r['extra_us']:>+10.0f}{r['wrapper_us']:>12.1f}{r['wrapper_share']:>11.4%}")


if __name__ == "__main__":
    main()
