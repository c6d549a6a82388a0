"""python benchmarks/model_speed.py --batch 4 --size 128 --reps 5 --threads 1

Times encode and decode of latentflow's AutoencoderKLModel against diffusers' AutoencoderKL
with identical weights, in one process, in fp32 and bf16, and prints latentflow/diffusers.

Both models get the same weights (ours loads diffusers' state dict) and the same input; the
repetitions interleave the two implementations (alternating which goes first), so load from
other processes on a shared machine hits both alike. Each figure is the median over
repetitions; the ratio is the median of the per-repetition ratios.

bf16 casts both models' weights and the input to bfloat16, and both run every op in bf16
(ours with ``force_upcast`` off: the same math as diffusers); ``--with-upcast`` adds rows with
``force_upcast=True`` (GroupNorm and attention softmax in fp32). Ours switches activations to
channels-last for bf16 on CPU by itself (its ``channels_last=None`` default); diffusers is run
as it comes.

``--threads`` sets torch's intra-op threads: on a machine shared with other jobs, 1 thread
gives far steadier figures than 2 (OpenMP barriers stall when a core is taken away). With one
thread the clock is the process's CPU time (``--clock cpu``), which leaves out the time other
jobs hold the core; with more threads it is wall time (CPU time would count spin-waits).

Options: --config mid (block_out_channels 64,128,256,256; default) or sd (128,256,512,512).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from latentflow.models.autoencoder_kl import AutoencoderKLConfig, AutoencoderKLModel
from latentflow.models.ldm_blocks import set_upcast

CONFIGS = {"mid": (64, 128, 256, 256), "sd": (128, 256, 512, 512)}


def build(widths: tuple[int, ...]):
    import diffusers

    levels = len(widths)
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(
        block_out_channels=widths, layers_per_block=2, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
    ).eval()
    ours = AutoencoderKLModel(AutoencoderKLConfig.from_dict(dict(ref.config))).eval()
    ours.load_state_dict_strict(ref.state_dict())
    return ours, ref


CLOCK = time.perf_counter


def timed(fn) -> float:
    start = CLOCK()
    fn()
    return CLOCK() - start


def bench_pair(name: str, ours_fn, ref_fn, reps: int) -> dict:
    ours_fn(), ref_fn()  # warm-up: allocator, oneDNN kernel selection
    ours_t, ref_t = [], []
    for i in range(reps):
        pair = [(ours_fn, ours_t), (ref_fn, ref_t)]
        for fn, sink in pair if i % 2 == 0 else reversed(pair):
            sink.append(timed(fn))
    ratio = statistics.median(o / r for o, r in zip(ours_t, ref_t))
    row = {"case": name, "latentflow_s": statistics.median(ours_t), "diffusers_s": statistics.median(ref_t), "ratio": ratio}
    print(f"{name:<34} latentflow {row['latentflow_s'] * 1e3:8.1f} ms   diffusers {row['diffusers_s'] * 1e3:8.1f} ms   "
          f"ratio {ratio:.3f}", flush=True)
    return row


@torch.no_grad()
def run(args: argparse.Namespace) -> list[dict]:
    ours, ref = build(CONFIGS[args.config])
    f = ours.downsample_factor
    x32 = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z32 = torch.randn(args.batch, 4, args.size // f, args.size // f, generator=torch.Generator().manual_seed(2))
    diff = (ours.decode(z32).sample - ref.decode(z32).sample).abs().max().item()
    print(f"config {args.config} {CONFIGS[args.config]}, batch {args.batch}, {args.size}x{args.size}, "
          f"threads {torch.get_num_threads()}, reps {args.reps}; fp32 decode max |diff| {diff:.2e}", flush=True)
    rows = []
    for dtype in [{"fp32": torch.float32, "bf16": torch.bfloat16}[d] for d in args.dtypes.split(",")]:
        tag = "fp32" if dtype == torch.float32 else "bf16"
        ours.to(dtype), ref.to(dtype)
        x, z = x32.to(dtype), z32.to(dtype)
        upcasts = [False, True] if dtype == torch.bfloat16 and args.with_upcast else [False]
        for upcast in upcasts:
            set_upcast(ours, upcast)
            suffix = " force_upcast" if upcast else ""
            rows.append(bench_pair(f"encode {tag}{suffix}", lambda: ours.encode(x), lambda: ref.encode(x), args.reps))
            rows.append(bench_pair(f"decode {tag}{suffix}", lambda: ours.decode(z), lambda: ref.decode(z), args.reps))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="mid")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None, help="default: cpu with 1 thread, else wall")
    parser.add_argument("--dtypes", default="fp32,bf16",
                        help="comma-separated: fp32, bf16 (bf16 diffusers is very slow on CPUs without native bf16)")
    parser.add_argument("--with-upcast", action="store_true", help="also time ours with force_upcast in bf16")
    args = parser.parse_args()
    global CLOCK
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = args.clock or ("cpu" if torch.get_num_threads() == 1 else "wall")
    CLOCK = time.process_time if clock == "cpu" else time.perf_counter
    print(f"clock: {clock}", flush=True)
    run(args)


if __name__ == "__main__":
    main()
