"""The ``latentflow`` command line.

    latentflow inspect ./outputs/latents            # metadata, counts, per-channel stats, scaling factor
                                                    # (video: layout, modality, clip config, decoder too)
    latentflow inspect s3://bucket/latents --json   # the same, as JSON
    latentflow preview ./outputs/latents --rows 8 --out ./preview
                                                    # the first 8 rows decoded: PNGs (images), mp4s (video clips), wavs (audio)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentflow`` console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    from latentflow.errors import LatentflowError
    from latentflow.sources.shards import resolve_storage_options

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
