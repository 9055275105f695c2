"""The ``zoobot-tf`` command line.

    zoobot-tf train --output_dir runs/demo            # train on synthetic galaxies, evaluate, export
    zoobot-tf make-synthetic --n_galaxies 5000 --output_dir data/synthetic
    zoobot-tf make-shards --catalog data/synthetic/catalog.csv --output_dir data/shards
    zoobot-tf finetune ... | predict ... | embed ... | export ... | scaling ...

Every subcommand has ``--help``. Options of ``train`` are the fields of
:class:`zoobot_tf.training.TrainConfig` (one source of truth for the API, the CLI and the absl script).
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path

log = logging.getLogger("zoobot_tf")


class CLIError(Exception):
    """A user error: printed without a traceback, exit code 2."""


def _bool(v: str) -> bool:
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, docs: dict[str, str] | None = None) -> None:
    """One ``--field`` option per dataclass field, typed and defaulted from the dataclass."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        kind = {bool: _bool, int: int, float: float}.get(base, str)
        default = f.default if f.default is not dataclasses.MISSING else None
        parser.add_argument(f"--{f.name}", type=kind, default=default, metavar=base.__name__.upper()
                            if hasattr(base, "__name__") else "VALUE",
                            help=(docs or {}).get(f.name, "") + f" (default: {default})")


TRAIN_HELP = {
    "output_dir": "run folder (config, logs, checkpoints, model, metrics, export)",
    "shards": "TFRecord shard folder made by make-shards",
    "catalog": "catalog CSV/Parquet with id_str, file_loc and vote counts (made into shards in the run folder)",
    "synthetic_galaxies": "without --shards/--catalog: render this many synthetic galaxies",
    "schema": "decision tree (built-in name or YAML/JSON file)",
    "backbone": "encoder architecture (see `zoobot-tf backbones`)",
    "strategy": "one_device | mirrored | multi_worker_mirrored | tpu",
    "cpu_replicas": "with --strategy mirrored on a machine without GPUs: split the CPU into this many replicas",
    "precision": "float32 | mixed_bfloat16 | mixed_float16",
    "batch_size": "per replica; the global batch is batch_size x replicas",
}


def cmd_train(args) -> int:
    from zoobot_tf import evaluate
    from zoobot_tf.training import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    if config.shards and not Path(config.shards).exists():
        raise CLIError(f"--shards {config.shards}: no such folder")
    if config.catalog and not Path(config.catalog).exists():
        raise CLIError(f"--catalog {config.catalog}: no such file")
    result = train(config)
    print(f"\nTest metrics ({result.output_dir}/metrics.json), model vs training-set baseline:")
    print(evaluate.format_table(result.metrics))
    total = result.metrics.iloc[-1]
    print(f"\nTest loss {total['loss']:.2f} vs baseline {total['baseline_loss']:.2f}; "
          f"trained in {result.seconds / 60:.1f} min; model: {result.output_dir / 'model.keras'}")
    return 0


def cmd_make_synthetic(args) -> int:
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    cat = make_synthetic_catalog(args.n_galaxies, args.output_dir, image_size=args.image_size, seed=args.seed,
                                 schema=args.schema)
    print(f"Wrote {len(cat)} galaxies: {Path(args.output_dir) / 'catalog.csv'}")
    return 0


def cmd_make_shards(args) -> int:
    from zoobot_tf.data import tfrecords
    from zoobot_tf.data.catalogs import read_catalog, resolve_file_locs

    if not Path(args.catalog).exists():
        raise CLIError(f"--catalog {args.catalog}: no such file")
    catalog = resolve_file_locs(read_catalog(args.catalog), Path(args.catalog).parent)
    label_cols = args.label_cols.split(",") if args.label_cols else None
    manifest = tfrecords.write_shards(
        catalog, args.output_dir, schema=args.schema if args.label_kind == "votes" else None,
        label_kind=args.label_kind, label_cols=label_cols, galaxies_per_shard=args.galaxies_per_shard,
        resize=args.resize, overwrite=args.overwrite)
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['n_galaxies']} galaxies in {len(entry['shards'])} shard(s)")
    if manifest["skipped_ids"]:
        print(f"skipped {len(manifest['skipped_ids'])} unreadable image(s): see {args.output_dir}/manifest.json")
    return 0


def cmd_export(args) -> int:
    import keras

    from zoobot_tf.export import export_model

    if not Path(args.model).exists():
        raise CLIError(f"--model {args.model}: no such file")
    model = keras.models.load_model(args.model)
    path = export_model(model, args.output_dir, name=args.name, mc_samples=args.mc_samples)
    print(f"Exported {args.model} to {path}")
    return 0


def cmd_backbones(args) -> int:
    from zoobot_tf.models.backbones import REGISTRY, build_backbone

    print(f"{'name':20s} {'family':12s} {'params (1 ch)':>14s}  timm name")
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        n = build_backbone(name, (64, 64, 1)).count_params() if args.count else float("nan")
        print(f"{name:20s} {spec.family:12s} {n / 1e6:13.2f}M  {spec.timm_name or '-'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zoobot_tf.training import TrainConfig

    parser = argparse.ArgumentParser(prog="zoobot-tf", description="Galaxy Zoo foundation models in TensorFlow/Keras.")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model on vote counts (default: synthetic galaxies)",
                       description="Train a Zoobot model, evaluate it against a no-image baseline and export it.")
    add_dataclass_arguments(p, TrainConfig, TRAIN_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("make-synthetic", help="render synthetic galaxies with simulated volunteer votes")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--n_galaxies", type=int, default=5000)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schema", default="gz_decals_dr5")
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("make-shards", help="write a catalog as TFRecord shards (encoded images + labels)")
    p.add_argument("--catalog", required=True, help="CSV/Parquet with id_str, file_loc and labels")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--schema", default="gz_decals_dr5")
    p.add_argument("--label_kind", default="votes", choices=["votes", "classification", "regression", "none"])
    p.add_argument("--label_cols", default=None, help="comma-separated label columns (classification/regression)")
    p.add_argument("--galaxies_per_shard", type=int, default=1024)
    p.add_argument("--resize", type=int, default=None, help="re-encode images at this size")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_make_shards)

    p = sub.add_parser("export", help="export a .keras model for TF Serving (saved_models/<name>/<version>/)")
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--output_dir", default="saved_models")
    p.add_argument("--name", default="zoobot")
    p.add_argument("--mc_samples", type=int, default=5)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("backbones", help="list the available backbones")
    p.add_argument("--count", action="store_true", help="build each and count its parameters")
    p.set_defaults(func=cmd_backbones)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except CLIError as e:
        print(f"zoobot-tf {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        if args.verbose:
            raise
        print(f"zoobot-tf {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
