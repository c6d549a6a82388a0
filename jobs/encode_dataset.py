"""python jobs/encode_dataset.py --config configs/encode/default.yaml [key=value ...] [--overwrite]

With no arguments it runs the embedded default, ``configs/encode/default.yaml`` (the shipped
photos, encoded by ``models/kl-f8`` into ``./outputs/default``).

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
Exit status: 0 on success, 1 when failures exceed ``max_error_rate``, 2 on a config/usage error
(one line ``error: ...`` on stderr, checked before Ray starts and before anything is written).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from latentflow.config_cli import config_help, read_yaml
from latentflow.errors import ConfigError, LatentflowError, one_line
from latentflow.jobs.config import EncodeJobConfig
from latentflow.jobs.preflight import check_before_ray

if TYPE_CHECKING:
    from latentflow.jobs.runner import EncodeSummary

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "encode" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=config_help(EncodeJobConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help=f"YAML job config (default: the embedded {DEFAULT_CONFIG.relative_to(REPO)})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output instead of resuming/refusing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--verbose", action="store_true", help="Ray's own logs and Ray Data's progress bars too")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, dotted for sections (processor.resolution=128)")
    return parser.parse_intermixed_args(argv)  # key=value overrides before or after the options


def load_config(args: argparse.Namespace) -> EncodeJobConfig:
    """The job config from ``--config`` (else the embedded default) and the overrides.

    The embedded default's relative source paths name files shipped in this repository, so they
    are resolved against it (the job then runs from any directory); its output stays relative to
    the current directory.
    """
    path = args.config or str(DEFAULT_CONFIG)
    if not os.path.isfile(path):
        raise ConfigError(f"--config {path!r} is not a file; give a YAML job file, e.g. --config {DEFAULT_CONFIG.relative_to(REPO)}")
    data = read_yaml(path)
    if args.config is None and isinstance(data.get("source"), dict):
        data["source"]["urls"] = [u if "://" in u or os.path.isabs(u) else str(REPO / u) for u in data["source"].get("urls", [])]
    config = EncodeJobConfig.from_yaml_data(data, args.overrides, where=path)
    return config.replace(overwrite=True) if args.overwrite else config


def print_summary(summary: EncodeSummary, unit: str = "images", storage_options: dict | None = None) -> None:
    s = summary
    print(
        f"\nthis run: encoded {s.rows} {unit} in {s.seconds:.1f} s ({s.images_per_s:.2f} {unit}/s); "
        f"{s.errors} sample errors; shards: {s.shards_committed} committed, {s.shards_skipped} already done, "
        f"{len(s.shards_failed)} failed of {s.shards_total}; {s.samples_seen} samples read = rows + sample errors"
    )
    for url in s.shards_failed:
        print(f"  failed shard: {url}")
    t = s.totals
    print(
        f"the output holds: {t.rows} {unit} in {t.shards} committed shards; {t.sample_errors} sample errors "
        f"({s.error_rate:.1%} of samples); {len(s.shards_failed)} shard(s) failing ({s.shard_failure_rate:.1%} of shards)"
    )
    for name, t in s.text.items():  # cached caption embeddings
        print(f"text {name}: {t['rows']} captions, {t['unique']} distinct embeddings stored (dedup ratio {t['dedup_ratio']}), "
              f"{t['truncated']} truncated to max_length; {t['bytes_per_caption']:.0f} bytes per caption "
              f"({t['vs_padded_fp32']}x smaller than {t['padded_fp32_bytes']} padded fp32)")
    if s.captions is not None:  # refresh_captions
        c = s.captions
        print(f"captions: {c['rows_changed']} changed in {c['shards_rewritten']} of {c['shards_checked']} committed shards; "
              f"{c['captions_encoded']} new captions encoded, {c['captions_reused']} reused from rows holding them, "
              f"{c['rows_dropped']} now error rows; latents kept")
    out = s.output.rstrip("/")
    print(f"output: {out}/latentflow.json  {out}/parquet/  {out}/zarr/  {out}/errors.parquet")
    from latentflow.read.latents import load_hint  # torch-heavy: imported once the job ran, not for a config error

    for line in load_hint(out, storage_options).splitlines():
        print(f"load it: {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args)
        print("config:", json.dumps(config.to_public_dict(), sort_keys=True))
        shards = check_before_ray(config)  # the source, the models, the output, the tokenizers: before Ray and torch load
        from latentflow.jobs.runner import run_encode_job  # Ray and torch: loaded once the config is known good

        summary = run_encode_job(config, progress=not args.no_progress, verbose=args.verbose, shards=shards)
    except KeyboardInterrupt:
        # committed shards are whole (markers are written last); a rerun of the same command resumes after them
        print("interrupted: the shards committed so far are kept; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - only ours (or Ray's wrapping of ours) become one line
        if not isinstance(err, LatentflowError) and not isinstance(getattr(err, "cause", None), LatentflowError):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    unit = "clips" if config.video is not None else "segments" if config.audio is not None else "images"
    print_summary(summary, unit, config.resolved_storage_options())
    if not summary.ok:
        print(
            f"FAILED: error rate {summary.error_rate:.1%} / shard failure rate {summary.shard_failure_rate:.1%} "
            f"of the output exceeds max_error_rate={summary.max_error_rate:.1%}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
