"""The ``latentflow`` command line.

    latentflow inspect ./outputs/latents            # metadata, counts, per-channel stats, scaling factor
                                                    # (video: layout, modality, clip config, decoder too)
    latentflow inspect s3://bucket/latents --json   # the same, as JSON
    latentflow preview ./outputs/latents --rows 8 --out ./preview
                                                    # the first 8 rows decoded: PNGs (images), mp4s (video clips), wavs (audio)
    latentflow verify ./outputs/latents --samples 32 # re-encode a random sample of rows, compare with the stored ones
                                                    # (exit 1 on drift, 2 on a usage mistake)
    latentflow --version

Storage options come from ``--storage-options '<json>'`` or ``$LATENTFLOW_STORAGE_OPTIONS``; never printed.
"""

from __future__ import annotations

import argparse
import json
import sys


def _parser() -> argparse.ArgumentParser:
    from latentflow.version import __version__

    parser = argparse.ArgumentParser(prog="latentflow", description="latentflow: autoencoder models and latent datasets")
    parser.add_argument("--version", action="version", version=f"latentflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ins = sub.add_parser("inspect", help="print the metadata, counts and statistics of a latent dataset")
    ins.add_argument("path", help="output directory of an encode job (local path or fsspec URL)")
    ins.add_argument("--json", action="store_true", help="print JSON instead of text")
    ins.add_argument("--storage-options", default=None, help="fsspec storage options as JSON (else $LATENTFLOW_STORAGE_OPTIONS)")
    pre = sub.add_parser("preview", help="decode the first committed rows with the decoder rebuilt from the codec: PNG / mp4 / wav files")
    pre.add_argument("path", help="output directory of an encode job (local path or fsspec URL)")
    pre.add_argument("--rows", type=int, default=8, help="how many rows, in committed order (default: 8)")
    pre.add_argument("--out", default="./preview", help="where the PNGs / mp4s / wavs go (default: ./preview)")
    pre.add_argument("--storage-options", default=None, help="fsspec storage options as JSON (else $LATENTFLOW_STORAGE_OPTIONS)")
    ver = sub.add_parser("verify", help="re-encode a random sample of committed rows from their sources and compare them "
                                        "with the stored latents (exit 1 on drift)")
    ver.add_argument("path", help="output directory of an encode job (local path or fsspec URL)")
    ver.add_argument("--samples", type=int, default=32, help="rows to re-encode, drawn over all committed rows (default: 32)")
    ver.add_argument("--seed", type=int, default=0, help="seed of the draw (default: 0)")
    ver.add_argument("--shards", nargs="+", default=None, metavar="SHARD_ID", help="only these committed shards")
    ver.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ... (default: auto)")
    ver.add_argument("--tolerance", type=float, default=None,
                     help="largest error relative to a row's largest value (default: 8 ulp of the coarsest of the stored "
                          "dtype, the compute dtype and TF32); token indices always match exactly")
    ver.add_argument("--source", action="append", default=[], metavar="KEY=VALUE",
                     help="source settings the codec does not record, as in the job's source: section "
                          "(format=parquet, image_column=video, urls=<moved data>); repeatable")
    ver.add_argument("--json", action="store_true", help="print JSON instead of text")
    ver.add_argument("--storage-options", default=None, help="fsspec storage options as JSON (else $LATENTFLOW_STORAGE_OPTIONS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentflow`` console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    from latentflow.errors import LatentflowError
    from latentflow.sources.shards import resolve_storage_options

    if args.command == "verify":
        return _verify(args)
    try:
        options = resolve_storage_options(json.loads(args.storage_options) if args.storage_options else None) or None
        if args.command == "preview":
            return _preview(args, options)
        from latentflow.read.inspect import format_inspect, inspect

        info = inspect(args.path, storage_options=options)
    except (OSError, ValueError, LatentflowError) as err:
        print(f"latentflow {args.command}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


def _preview(args: argparse.Namespace, options: dict | None) -> int:
    from latentflow.read.preview import write_preview

    written = write_preview(args.path, args.out, rows=args.rows, storage_options=options)
    print(f"wrote {len(written)} previews to {args.out}:")
    for url in written:
        print(f"  {url}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    """0: every sampled row matches; 1: drift (named per shard and key); 2: a usage mistake, in one line naming the fix."""
    from latentflow.encode.verify import format_report, verify_output
    from latentflow.errors import LatentflowError
    from latentflow.sources.shards import resolve_storage_options

    try:
        try:
            options = resolve_storage_options(json.loads(args.storage_options) if args.storage_options else None) or None
        except json.JSONDecodeError as err:
            raise ValueError(f"--storage-options is not JSON ({err}); pass a JSON object, e.g. '{{\"anon\": true}}'") from None
        report = verify_output(args.path, samples=args.samples, seed=args.seed, shards=args.shards, device=args.device,
                               tolerance=args.tolerance, storage_options=options, source_overrides=args.source)
    except (OSError, ValueError, LatentflowError) as err:
        print(f"latentflow verify: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
