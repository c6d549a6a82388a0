"""python jobs/encode_dataset.py --config configs/encode/default.yaml [key=value ...] [--overwrite]

Encode a dataset of images (WebDataset tars, Parquet, a Hugging Face dataset or a folder;
local or s3://) into latents with a fixed autoencoder, exactly once and resumably, as
Parquet (readable with ``datasets.load_dataset``) and Zarr, with codec metadata.

On a Ray cluster::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python jobs/encode_dataset.py --config configs/encode/default.yaml output=/abs/path/or/s3://bucket/out

Plain ``python`` starts a local Ray; with ``$RAY_ADDRESS`` set (as inside ``ray job submit``)
it joins that cluster. Under ``--working-dir`` the driver runs in a temporary copy of the
directory, so give ``output`` as an absolute path or a URL.

Rerunning the same command skips committed shards; new input shards are appended; a
different model, weights or processor config is refused unless ``--overwrite``.
Exit status: 0 on success, 1 when failures exceed ``max_error_rate``, 2 on a config/usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from latentflow.errors import LatentflowError
from latentflow.pipeline.config import EncodeJobConfig
from latentflow.pipeline.runner import EncodeSummary, run_encode_job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML job config, e.g. configs/encode/default.yaml")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output instead of resuming/refusing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for sections (processor.resolution=128)")
    return parser.parse_args(argv)


def print_summary(summary: EncodeSummary) -> None:
    s = summary
    print(
        f"\nencoded {s.rows} images in {s.seconds:.1f} s ({s.images_per_s:.2f} images/s); "
        f"{s.errors} sample errors ({s.error_rate:.1%}); shards: {s.shards_committed} committed, "
        f"{s.shards_skipped} already done, {len(s.shards_failed)} failed of {s.shards_total}"
    )
    for url in s.shards_failed:
        print(f"  failed shard: {url}")
    out = s.output.rstrip("/")
    print(f"output: {out}/latentflow.json  {out}/parquet/  {out}/zarr/  {out}/errors.parquet")
    print(f'load it: import datasets; ds = datasets.load_dataset("{out}", split="train")'
          f'   # or latentflow.load_latents("{out}")')


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = EncodeJobConfig.from_yaml(args.config, args.overrides)
        if args.overwrite:
            config = config.replace(overwrite=True)
        print("config:", json.dumps(config.to_public_dict(), sort_keys=True))
        summary = run_encode_job(config, progress=not args.no_progress)
    except LatentflowError as err:
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    print_summary(summary)
    if not summary.ok:
        print(
            f"FAILED: error rate {summary.error_rate:.1%} / shard failure rate {summary.shard_failure_rate:.1%} "
            f"exceeds max_error_rate={summary.max_error_rate:.1%}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
