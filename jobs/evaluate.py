"""Evaluate autoencoders on a dataset: PSNR/SSIM(/LPIPS), latent stats, codebook usage, throughput, plots.

    python jobs/evaluate.py --config configs/eval/photos.yaml [key=value ...]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/evaluate.py --config configs/eval/photos.yaml

Writes ``<output>/report.json`` and PNG plots (reconstruction grid, per-channel latent
histograms, codebook usage for quantized models, a comparison bar chart for several models).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from latentflow.config_cli import config_help
    from latentflow.evaluation.config import EvalJobConfig

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=config_help(EvalJobConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file of an EvalJobConfig")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_images=16 models=[a,b]")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from latentflow.errors import LatentflowError, one_line

    try:
        config = EvalJobConfig.from_yaml(args.config, args.overrides)  # a config mistake: one line, before torch and Ray
        from latentflow.evaluation import run_evaluation  # torch and Ray: loaded once the config is known good

        report = run_evaluation(config)
    except LatentflowError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    summary = {
        name: {"psnr": (m["psnr"] or {}).get("mean"), "ssim": (m["ssim"] or {}).get("mean"),
               "size_reduction_factor": m["size_reduction_factor"],
               "encode_images_per_s": m["throughput"]["encode_images_per_s"]}
        for name, m in report["models"].items()
    }
    print(json.dumps({"report": report["report_path"], "num_images": report["num_images"], "models": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
