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
import json
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
    "backbone_kwargs": "JSON overrides of the backbone's arguments, e.g. '{\"drop_path_rate\": 0.1}'",
    "strategy": "one_device | mirrored | multi_worker_mirrored | tpu",
    "tfds": "a prepared TFDS data set with votes instead of shards (e.g. synthetic_gz, gz_decals/dr5)",
    "cpu_replicas": "with --strategy mirrored on a machine without GPUs: split the CPU into this many replicas",
    "precision": "float32 | mixed_bfloat16 (ConvNeXt training ~1.3x faster on CPUs with AMX; EfficientNet "
                 "training is not) | mixed_float16 (GPUs)",
    "batch_size": "per replica; the global batch is batch_size x replicas",
}


def cmd_train(args) -> int:
    from zoobot_tf import evaluate
    from zoobot_tf.training import TrainConfig, train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if isinstance(values.get("backbone_kwargs"), str):
        try:
            values["backbone_kwargs"] = json.loads(values["backbone_kwargs"])
        except json.JSONDecodeError as e:
            raise CLIError(f"--backbone_kwargs must be JSON, e.g. '{{\"drop_path_rate\": 0.1}}': {e}") from None
    config = TrainConfig(**values)
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


def default_model_path() -> str:
    """The embedded default model: $ZOOBOT_TF_MODEL, else saved_models/zoobot_synthetic in the repository."""
    import os

    if os.environ.get("ZOOBOT_TF_MODEL"):
        return os.environ["ZOOBOT_TF_MODEL"]
    return str(Path(__file__).resolve().parents[1] / "saved_models" / "zoobot_synthetic")


def _check_input(path: str, flag: str) -> None:
    if not Path(path).exists():
        raise CLIError(f"{flag} {path}: no such file or folder")


def _load(model_path: str):
    from zoobot_tf.finetune import load_model

    _check_input(model_path, "--model")
    try:
        return load_model(model_path)
    except (TypeError, FileNotFoundError) as e:
        raise CLIError(str(e)) from None


def cmd_finetune(args) -> int:
    import json

    from zoobot_tf.data.catalogs import read_catalog, resolve_file_locs
    from zoobot_tf.finetune import finetune
    from zoobot_tf.models.backbones import REGISTRY

    from zoobot_tf.finetune import finetune_tfds

    if args.pretrained not in REGISTRY:
        _check_input(args.pretrained, "--pretrained")
    if bool(args.catalog) == bool(args.tfds):
        raise CLIError("give exactly one of --catalog and --tfds")
    kwargs = dict(n_blocks=args.n_blocks, learning_rate=args.learning_rate, batch_size=args.batch_size,
                  dropout_rate=args.dropout_rate, augment={"flip": args.flip})
    if args.task == "votes":
        kwargs["schema"] = args.schema
    if args.crop_fraction is not None:
        kwargs["crop_fraction"] = args.crop_fraction
    if args.image_size:
        kwargs["image_size"] = args.image_size
    if args.tfds:
        kwargs.pop("schema", None)
        result = finetune_tfds(args.pretrained, args.tfds, args.tfds_data_dir, epochs=args.epochs,
                               patience=args.patience, seed=args.seed, **kwargs)
    else:
        _check_input(args.catalog, "--catalog")
        if not args.label_cols:
            raise CLIError("--catalog needs --label_cols")
        catalog = resolve_file_locs(read_catalog(args.catalog), Path(args.catalog).parent)
        labels = args.label_cols.split(",")
        missing = [c for c in labels if c not in catalog.columns]
        if missing:
            raise CLIError(f"--label_cols {missing} not in the catalog; its columns are {list(catalog.columns)}")
        result = finetune(args.pretrained, catalog, labels, task=args.task, epochs=args.epochs,
                          patience=args.patience, split_col="split", balance_classes=args.balance_classes,
                          seed=args.seed, **kwargs)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.model.save(out / "model.keras")
    (out / "metrics.json").write_text(json.dumps({"test": result.test_metrics, "history": result.history},
                                                 indent=2, default=float))
    print("test:", {k: round(float(v), 4) for k, v in result.test_metrics.items()})
    print(f"model: {out / 'model.keras'}")
    return 0


def cmd_predict(args) -> int:
    from zoobot_tf.predict import predict

    _check_input(args.input, "--input")
    model = _load(args.model)
    skipped = predict(model, args.input, args.output, n_samples=args.n_samples, tta=args.tta,
                      batch_size=args.batch_size, hdf5=args.hdf5, precision=args.precision)
    print(f"wrote {args.output}" + (f" and {args.hdf5}" if args.hdf5 else "")
          + (f"; skipped {len(skipped)} unreadable image(s), listed in {args.output}.skipped.csv" if len(skipped)
             else ""))
    return 0


def cmd_embed(args) -> int:
    from zoobot_tf.representations import EmbeddingIndex, _write_table, embed

    _check_input(args.input, "--input")
    model = _load(args.model)
    table = embed(model, args.input, None, batch_size=args.batch_size, pca_components=args.pca)
    if args.anomaly_k:
        scores = EmbeddingIndex.from_table(table).anomaly_scores(k=args.anomaly_k)
        table = table.merge(scores, on="id_str")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    _write_table(table, Path(args.output), {"backbone": model.backbone, "pca": args.pca})
    print(f"wrote {len(table)} embeddings to {args.output}")
    return 0


def cmd_similar(args) -> int:
    from zoobot_tf.representations import EmbeddingIndex

    _check_input(args.embeddings, "--embeddings")
    index = EmbeddingIndex.from_table(args.embeddings)
    try:
        print(index.neighbours(args.id, k=args.k).to_string(index=False))
    except KeyError as e:
        raise CLIError(str(e)) from None
    return 0


def cmd_tfds_build(args) -> int:
    """TFDS's own `build` command, without the rest of the `tfds` CLI: in tensorflow-datasets 4.9.10 the
    `tfds` entry point imports apache_beam for an unrelated subcommand and fails where Beam is not installed."""
    import simple_parsing
    from tensorflow_datasets.scripts.cli import build

    from zoobot_tf import datasets as zdatasets

    target = args.dataset
    if not Path(target).exists():  # a builder name: use the repository's folder
        target = str(zdatasets.datasets_dir() / target.split("/")[0])
        if not Path(target).exists():
            raise CLIError(f"{args.dataset}: not a builder folder nor one of {', '.join(zdatasets.BUILDERS)}")
    argv = [target] + (["--manual_dir", args.manual_dir] if args.manual_dir else []) + \
        (["--data_dir", args.data_dir] if args.data_dir else []) + (["--config", args.config] if args.config else [])
    simple_parsing.parse(build.Args, args=argv).execute()
    return 0


def cmd_scaling(args) -> int:
    from zoobot_tf import scaling

    if args.action == "run":
        _check_input(args.grid, "--grid")
        scaling.run(args.grid, index=args.index, progress=args.progress)
        return 0
    grid = scaling.load_grid(args.grid) if args.grid else None
    results_dir = args.results or (grid["output_dir"] if grid else None)
    if not results_dir:
        raise CLIError("analyse needs --results <folder with results.csv> or --grid")
    results = scaling.read_results(results_dir)
    if results.empty:
        raise CLIError(f"no {scaling.RESULTS} in {results_dir}")
    fits = scaling.analyse(results, args.out or results_dir)
    print(scaling.exponent_table(fits))
    print(f"plots and fits.json in {args.out or results_dir}")
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

    p = sub.add_parser("finetune", help="finetune a pretrained encoder on labelled galaxies",
                       description="Finetune on a catalog (id_str, file_loc, label columns; optional split column).")
    p.add_argument("--pretrained", default=default_model_path(),
                   help="pretrained .keras file, export folder, or a backbone name for a random encoder")
    p.add_argument("--catalog", default=None, help="catalog CSV/Parquet (or use --tfds)")
    p.add_argument("--label_cols", default=None, help="label column(s), comma-separated")
    p.add_argument("--tfds", default=None, help="a prepared TFDS classification set, e.g. gz_rings")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--task", default="classification", choices=["classification", "regression", "votes"])
    p.add_argument("--schema", default="gz_rings", help="decision tree for --task votes")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--n_blocks", type=int, default=0, help="encoder stages to train from the top (0: frozen, -1: all)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--dropout_rate", type=float, default=0.5)
    p.add_argument("--image_size", type=int, default=None, help="default: the pretrained model's")
    p.add_argument("--crop_fraction", type=float, default=None)
    p.add_argument("--flip", type=_bool, default=True, help="false for chirality tasks")
    p.add_argument("--balance_classes", action="store_true", help="weight classes by inverse frequency")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="predict (with MC-dropout uncertainty) for a catalog, folder or shards")
    p.add_argument("--model", default=default_model_path(), help=".keras file or export folder (default: embedded)")
    p.add_argument("--input", required=True, help="catalog CSV/Parquet, folder of JPEG/PNG/FITS, or shard folder")
    p.add_argument("--output", required=True, help="table: .csv or .parquet")
    p.add_argument("--hdf5", default=None, help="also write raw samples (galaxy x output x sample) here")
    p.add_argument("--n_samples", type=int, default=5, help="MC-dropout samples")
    p.add_argument("--tta", action="store_true", help="test-time augmentation on each sample")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--precision", default=None,
                   help="float32 | mixed_bfloat16 (faster on CPUs with AMX, outputs within ~1%%) | mixed_float16 "
                        "(default: the model's own)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("embed", help="write embeddings (feat_0..) for a catalog, folder or shards")
    p.add_argument("--model", default=default_model_path())
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True, help=".parquet, .h5 or .csv")
    p.add_argument("--pca", type=int, default=None, help="keep this many principal components")
    p.add_argument("--anomaly_k", type=int, default=None, help="add an anomaly_score (mean distance to k neighbours)")
    p.add_argument("--batch_size", type=int, default=64)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("similar", help="the galaxies most similar to one galaxy, from an embeddings table")
    p.add_argument("--embeddings", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--k", type=int, default=10)
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("tfds-build", help="build a TFDS data set from datasets/<name> (TFDS's build command)")
    p.add_argument("dataset", help="builder folder (datasets/gz_rings) or name (gz_rings)")
    p.add_argument("--manual_dir", default=None, help="folder with the manually downloaded files")
    p.add_argument("--data_dir", default=None, help="where TFDS writes the data set (default ~/tensorflow_datasets)")
    p.add_argument("--config", default=None, help="builder config, e.g. dr5")
    p.set_defaults(func=cmd_tfds_build)

    p = sub.add_parser("scaling", help="scaling-law sweeps: run grid points, fit power laws, plot",
                       description="run: train one grid point (--index, SLURM-array friendly) or all remaining; "
                                   "analyse: fit L(D) = a D^-b + c per architecture and plot.")
    p.add_argument("action", choices=["run", "analyse"])
    p.add_argument("--grid", default=None, help="YAML/JSON grid (see zoobot_tf.scaling)")
    p.add_argument("--index", type=int, default=None, help="run only this grid point")
    p.add_argument("--results", default=None, help="analyse: folder holding results.csv")
    p.add_argument("--out", default=None, help="analyse: where to write plots and fits.json")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=cmd_scaling)

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
