"""The ``latentflow`` command line.

    latentflow inspect ./outputs/latents            # metadata, counts, per-channel stats, scaling factor
                                                    # (video: layout, modality, clip config, decoder too)
    latentflow inspect s3://bucket/latents --json   # the same, as JSON
    latentflow preview ./outputs/latents --rows 8 --out ./preview
                                                    # the first 8 rows decoded: PNGs (images), mp4s (video clips), wavs (audio)
    latentflow verify ./outputs/latents --samples 32 # re-encode a random sample of rows, compare with the stored ones
                                                    # (exit 1 on drift, 2 on a usage mistake)
    latentflow encode-prompts prompts.txt --from-output ./outputs/latents --output ./outputs/prompts
                                                    # text-only mode: a prompt file's embeddings by the text encoders
                                                    # the latents' codec records (for sample.prompt_cache)
    latentflow encode-prompts prompts.txt --text-encoder '{name: t5, model: /models/t5}' --output ./prompts
                                                    # or encoders given as in the job's text_encoders / a family preset
    latentflow --version

Storage options come from ``--storage-options '<json>'`` or ``$LATENTFLOW_STORAGE_OPTIONS``; never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from latentflow.errors import one_line


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
    enc = sub.add_parser("encode-prompts", help="text-only mode: cache the embeddings of a prompt file without media "
                                                "(evaluation prompts; a flow prior's sample.prompt_cache)")
    enc.add_argument("prompts", help="UTF-8 text file, one prompt per line (local path or fsspec URL)")
    enc.add_argument("--output", required=True, metavar="DIR",
                     help="where prompts.parquet and text_encoders.json go (local path or fsspec URL)")
    enc.add_argument("--from-output", default=None, metavar="LATENTS",
                     help="the text encoders an encode output's codec records: the prompts are embedded exactly as its "
                          "captions were (refused when the encoder's files changed since)")
    enc.add_argument("--text-encoder", action="append", default=[], metavar="YAML",
                     help="a text encoder as in the job's text_encoders: '{name: t5, model: <folder>, max_length: 512}' "
                          "(TextEncoderConfig); repeatable")
    enc.add_argument("--preset", action="append", default=[], metavar="YAML",
                     help="a family preset's text encoders (latentflow.encode.text_presets): '{name: flux, model: "
                          "<pipeline folder or hub id>}' plus the preset's own keys (max_sequence_length, dtype...); repeatable")
    enc.add_argument("--json", action="store_true", help="print the summary as JSON")
    enc.add_argument("--storage-options", default=None, help="fsspec storage options as JSON (else $LATENTFLOW_STORAGE_OPTIONS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latentflow`` console script. Returns the exit status."""
    args = _parser().parse_args(argv)
    from latentflow.errors import LatentflowError

    if args.command == "verify":
        return _verify(args)
    if args.command == "encode-prompts":
        return _encode_prompts(args)
    try:
        options = _storage_options(args)
        if args.command == "preview":
            return _preview(args, options)
        from latentflow.read.inspect import format_inspect, inspect

        info = inspect(args.path, storage_options=options)
    except (OSError, ValueError, LatentflowError) as err:
        print(f"latentflow {args.command}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1) if args.json else format_inspect(info))
    return 0


def _storage_options(args: argparse.Namespace) -> dict | None:
    """``--storage-options`` (JSON), else ``$LATENTFLOW_STORAGE_OPTIONS``, else None.

    Raises:
        ValueError: the option is not JSON (the message names the fix).
    """
    from latentflow.sources.shards import resolve_storage_options

    try:
        return resolve_storage_options(json.loads(args.storage_options) if args.storage_options else None) or None
    except json.JSONDecodeError as err:
        raise ValueError(f"--storage-options is not JSON ({err}); pass a JSON object, e.g. '{{\"anon\": true}}'") from None


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

    try:
        options = _storage_options(args)
        report = verify_output(args.path, samples=args.samples, seed=args.seed, shards=args.shards, device=args.device,
                               tolerance=args.tolerance, storage_options=options, source_overrides=args.source)
    except (OSError, ValueError, LatentflowError) as err:
        print(f"latentflow verify: {one_line(err, typed=False)}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=1) if args.json else format_report(report))
    return 0 if report.ok else 1


def _spec(option: str, spec: str) -> dict:
    """The YAML mapping of one ``--text-encoder`` / ``--preset`` value."""
    import yaml

    from latentflow.config_cli import check_mapping
    from latentflow.errors import ConfigError

    try:
        data = yaml.safe_load(spec)
    except yaml.YAMLError as err:
        raise ConfigError(f"{option} {spec!r} is not YAML ({getattr(err, 'problem', None) or type(err).__name__}); "
                          f"give a mapping, e.g. {option} '{{name: t5, model: /models/t5}}'") from None
    return check_mapping(data, f"{option} {spec}")


def _preset_configs(spec: str) -> list:
    """``--preset '{name: flux, model: <folder>, max_sequence_length: 256}'``: the family's configs (text_presets.preset)."""
    import inspect as _inspect

    from latentflow.encode.text_presets import PRESETS, preset
    from latentflow.errors import ConfigError

    data = _spec("--preset", spec)
    name, model = data.pop("name", None), data.pop("model", None)
    if not name or not model:
        raise ConfigError(f"--preset {spec!r} needs name (one of {sorted(PRESETS)}) and model (the pipeline's folder, "
                          "URL or hub id)")
    if name in PRESETS:
        try:
            _inspect.signature(PRESETS[name].configs).bind(model, **data)
        except TypeError:
            keys = [k for k in _inspect.signature(PRESETS[name].configs).parameters if k != "model"]
            raise ConfigError(f"--preset {name!r} takes name, model and {keys}, got: {sorted(data)}") from None
    return preset(name, model, **data)


def _prompt_encoders(args: argparse.Namespace, options: dict | None) -> list:
    """The encoders of ``encode-prompts``, in order: the codec's (``--from-output``), ``--text-encoder``, ``--preset``.
    A codec's encoders come back as its :class:`TextColumn` entries (reloaded and fingerprint-checked on use)."""
    from latentflow.encode.text_config import TextEncoderConfig
    from latentflow.errors import ConfigError

    items: list = []
    if args.from_output:
        from latentflow.format.state import read_output_codec

        codec = read_output_codec(args.from_output, options)
        if codec is None:
            raise ConfigError(f"--from-output {args.from_output!r} is not a latentflow output (no latentflow.json or "
                              "_codec.json); give the output directory of an encode job")
        if not codec.text:
            raise ConfigError(f"--from-output {args.from_output!r} caches no text encoder (its job had no text_encoders); "
                              "give --text-encoder or --preset instead")
        items += list(codec.text)
    for spec in args.text_encoder:
        try:
            items.append(TextEncoderConfig.from_dict(_spec("--text-encoder", spec)))
        except ConfigError as err:
            raise ConfigError(f"--text-encoder {spec!r}: {err}") from None
    for spec in args.preset:
        items += _preset_configs(spec)
    if not items:
        raise ConfigError("no text encoder: give --from-output <latent output> (the encoders its captions were cached "
                          "with), --text-encoder '{name: t5, model: <folder>}' or --preset '{name: flux, model: <folder>}'")
    return items


def _encode_prompts(args: argparse.Namespace) -> int:
    """0: written; 2: a usage mistake (a missing prompt file, a bad spec, no tokenizer...), in one ``error:`` line."""
    from types import SimpleNamespace

    from latentflow.encode.prompts import config_from_column, encode_prompts, prompt_cache_summary, read_prompt_list
    from latentflow.errors import ConfigError, LatentflowError
    from latentflow.format.text import TextColumn

    try:
        options = _storage_options(args)
        items = _prompt_encoders(args, options)
        recorded = [i for i in items if isinstance(i, TextColumn)]  # first: the codec's
        try:
            prompts = read_prompt_list(args.prompts, options)
        except FileNotFoundError:
            raise FileNotFoundError(f"prompt file {args.prompts!r} not found; give a UTF-8 text file with one prompt "
                                    "per line") from None
        from latentflow.jobs.preflight import check_text_encoders  # every tokenizer before any model loads

        configs = [config_from_column(i) if isinstance(i, TextColumn) else i for i in items]
        try:
            check_text_encoders(SimpleNamespace(text_encoders=configs, resolved_storage_options=lambda: options))
        except ConfigError as err:
            from latentflow.hub import is_hub_id

            relative = [c.model for c in configs[:len(recorded)] if "://" not in c.model and not os.path.isabs(c.model)
                        and not os.path.exists(c.model) and not is_hub_id(c.model)]
            if not relative:
                raise
            raise ConfigError(f"{err} (--from-output {args.from_output!r} records {relative} as its encode job was given "
                              "them, relative to the directory it ran in: run from there)") from None
        encode_prompts(prompts, items, args.output, options)
        summary = prompt_cache_summary(args.output, options)
    except (OSError, ValueError, LatentflowError) as err:
        print(f"error: {one_line(err, typed=False)}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=1))
        return 0
    names = {i.name for i in recorded}
    print(f"prompts: {summary['prompts']} ({summary['distinct']} distinct) from {args.prompts}")
    for name, t in summary["text"].items():
        print(f"text {name}{f' (the encoder {args.from_output} records)' if name in names else ''}: "
              f"{t['tokens']} tokens ({t['tokens'] / max(summary['prompts'], 1):.1f} per prompt), {t['truncated']} "
              f"truncated to max_length; {t['bytes']} bytes stored ({t['bytes_per_prompt']:.0f} per prompt, {t['dtype']}); "
              f"fingerprint {t['fingerprint'][:12]}")
    print(f"output: {'  '.join(summary['files'])}")
    print(f"use it: sample.prompt_cache={summary['output']}  (or prompt_embeddings(codec.text[i], cache=...))")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
