"""python benchmarks/eval_shipped_models.py kl-f8 [--from outputs/train/kl_f8/final --ship] [--write]

Measures a shipped checkpoint (``models/<name>``) on the held-out photographs in
``data/heldout/heldout-000000.tar`` (12 PNG crops, 128x128, of scikit-learn's ``china.jpg``
and ``flower.jpg``; never trained on) and prints one JSON report:

* PSNR and SSIM (``latentflow.metrics``, images in [-1, 1], reconstructions clamped) at each
  evaluation side ``s``: the center ``s x s`` of every 128 px crop, no resampling, so every
  side sees the same pixel density;
* per-channel latent mean/std of ``encode(x).latents`` at the largest side, and the suggested
  ``scaling_factor = 1 / std`` and ``shift_factor = mean`` (``ChannelStats``);
* for quantized models, codebook usage / perplexity / dead codes over the held-out tokens.

``--from DIR --ship`` copies a trainer output (``final/``) into ``models/<name>`` first, with
the measured scaling/shift written into its ``config.json`` (continuous models).
``--write`` stores the report as ``models/<name>/eval.json``; ``tests/test_shipped_models.py``
re-measures with :func:`measure` and compares with that file. Deterministic: eval mode,
posterior means, fixed crops, fp32.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = ROOT / "data" / "heldout" / "heldout-000000.tar"
# Evaluation sides per shipped model: the card's headline number is the first side.
SIDES = {"kl-f8": (128, 64), "fsq-f8": (128, 64), "transvae-tiny": (128, 32, 64)}


def load_heldout(side: int = 128, limit: int | None = None) -> torch.Tensor:
    """The held-out crops as (N, 3, side, side) float32 in [-1, 1] (center ``side`` of each 128 px crop)."""
    import webdataset as wds

    images = []
    for sample in wds.WebDataset(str(HELDOUT), shardshuffle=False, empty_check=False):
        img = np.asarray(Image.open(io.BytesIO(sample["png"])).convert("RGB"))  # (128, 128, 3)
        top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        images.append(img[top : top + side, left : left + side])
        if limit is not None and len(images) == limit:
            break
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # (N, 3, side, side)
    return pixels / 127.5 - 1.0


def _codebook_size(model) -> int | None:
    from latentflow.training.tasks import find_quantizer

    quantizer = find_quantizer(model)
    return None if quantizer is None else int(quantizer.codebook_size)


@torch.no_grad()
def measure(model, sides: tuple[int, ...], limit: int | None = None, batch: int = 4) -> dict:
    """PSNR/SSIM per side, latent statistics and codebook usage at ``sides[0]``.

    Args:
        model: a loaded LatentModel (put in eval mode here).
        sides: evaluation sides (each <= 128).
        limit: use only the first ``limit`` held-out crops.
        batch: crops per forward pass.

    Returns:
        a JSON-able dict.
    """
    from latentflow.metrics import ChannelStats, CodeHistogram, psnr, ssim

    model.eval()
    report: dict = {"psnr": {}, "ssim": {}}
    size = _codebook_size(model)
    for i, side in enumerate(sides):
        x = load_heldout(side, limit)
        stats, hist = ChannelStats(), CodeHistogram(size) if size else None
        recs = []
        for chunk in x.split(batch):
            enc = model.encode(chunk)
            recs.append(model.decode(enc.latents).sample.float().clamp(-1, 1))
            stats.update(enc.latents.float())
            if hist is not None and getattr(enc, "indices", None) is not None:
                hist.update(enc.indices)
        rec = torch.cat(recs)
        report["psnr"][str(side)] = round(psnr(rec, x).mean, 4)
        report["ssim"][str(side)] = round(ssim(rec, x).mean, 4)
        if i == 0:
            report["num_images"] = int(x.shape[0])
            report["latent_shape"] = list(enc.latents.shape[1:])
            report["latent_stats"] = _rounded(stats.to_dict())
            if hist is not None:
                s = hist.stats()
                report["codebook"] = {"size": size, "used": int((hist.counts > 0).sum()), "usage": round(s.usage, 4),
                                      "perplexity": round(s.perplexity, 2), "dead_codes": int(s.dead_codes),
                                      "tokens": int(s.total)}
    return report


def _rounded(d: dict) -> dict:
    r = lambda v: [round(float(a), 5) for a in v] if isinstance(v, list) else (round(v, 5) if isinstance(v, float) else v)
    return {k: r(v) for k, v in d.items()}


def ship(name: str, source: str) -> Path:
    """Copy a trained ``save_pretrained`` folder into ``models/<name>`` with measured scaling/shift."""
    from latentflow import AutoModel

    model = AutoModel.from_pretrained(source)
    target = ROOT / "models" / name
    if model.latent_kind == "continuous":
        stats = measure(model, (SIDES[name][0],))["latent_stats"]
        model.config.scaling_factor = round(stats["suggested_scaling_factor"], 5)
        model.config.shift_factor = round(stats["suggested_shift_factor"], 5)
    model.save_pretrained(str(target))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SIDES))
    parser.add_argument("--from", dest="source", help="a trainer output folder to ship first (with --ship)")
    parser.add_argument("--ship", action="store_true")
    parser.add_argument("--write", action="store_true", help="write models/<name>/eval.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.ship:
        ship(args.name, args.source)
    from latentflow import AutoModel

    model = AutoModel.from_pretrained(args.name)
    report = {"model": args.name, "heldout": str(HELDOUT.relative_to(ROOT)), "sides": list(SIDES[args.name]),
              "weights_sha256": model.weights_hash(), **measure(model, SIDES[args.name])}
    text = json.dumps(report, indent=2)
    print(text)
    if args.write:
        (ROOT / "models" / args.name / "eval.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
