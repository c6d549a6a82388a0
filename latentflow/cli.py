"""The ``latentflow`` command line.

    latentflow inspect ./outputs/latents            # metadata, counts, per-channel stats, scaling factor
                                                    # (video: layout, modality, clip config, decoder too)
    latentflow inspect s3://bucket/latents --json   # the same, as JSON
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentflow`` console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    from latentflow.read.inspect import format_inspect, inspect
    from latentflow.sources.shards import resolve_storage_options

    try:
        options = resolve_storage_options(json.loads(args.storage_options) if args.storage_options else None)
        info = inspect(args.path, storage_options=options or None)
    except (OSError, ValueError) as err:
        print(f"latentflow inspect: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
