"""The ``zoobot-tf`` command line: a thin layer over the job configs (:mod:`zoobot_tf.config`).

    zoobot-tf train --output_dir runs/demo            # train on synthetic galaxies, evaluate, export
    zoobot-tf make-synthetic --n_galaxies 5000 --output_dir data/synthetic
    zoobot-tf make-shards --catalog data/synthetic/catalog.csv --output_dir data/shards
    zoobot-tf finetune ... | predict ... | embed ... | export ... | scaling ...

Every subcommand has ``--help``; its options are the fields of its config class, checked before any work
starts. User errors print one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path

from zoobot_tf import config as zconfig
from zoobot_tf.config import ConfigError, JobConfig, option

log = logging.getLogger("zoobot_tf")


# ---------------------------------------------------------------------------------------------- small configs
@dataclasses.dataclass
class SimilarConfig(JobConfig):
    """``zoobot-tf similar``: the galaxies most similar to one galaxy, from an embeddings table."""

    command = "similar"
    embeddings: str = option(None, "embeddings table written by `zoobot-tf embed`", exists="file")
    id: str = option(None, "id_str of the galaxy to search from")
    k: int = option(10, "how many neighbours", min=1, max=100_000)


@dataclasses.dataclass
class TFDSBuildConfig(JobConfig):
    """``zoobot-tf tfds-build``: build a TFDS data set (TFDS's own build command)."""

    command = "tfds-build"
    dataset: str = option(None, "builder name (gz_rings, synthetic_gz, ...; optionally name/config)")
    manual_dir: str | None = option(None, "folder with the manually downloaded files", exists="dir")
    data_dir: str | None = option(None, "where TFDS writes the data set (default ~/tensorflow_datasets)")
    config: str | None = option(None, "builder config, e.g. dr5")
    beam_options: str | None = option(None, "build on Apache Beam (gz2, gz_decals, gz1_sdss) with these pipeline "
                                      "options, comma-separated as TFDS takes them (e.g. 'runner=DirectRunner,"
                                      "direct_num_workers=2,direct_running_mode=multi_processing')")


@dataclasses.dataclass
class ScalingConfig(JobConfig):
    """``zoobot-tf scaling run|analyse``."""

    command = "scaling"
    action: str = option(None, "run: train grid points; analyse: fit and plot the results", choices=("run", "analyse"))
    grid: str | None = option(None, "YAML/JSON grid (see zoobot_tf.scaling)", exists="file")
    index: int | None = option(None, "run only this grid point (e.g. $SLURM_ARRAY_TASK_ID)", min=0)
    results: str | None = option(None, "analyse: folder holding results.csv", exists="dir")
    out: str | None = option(None, "analyse: where to write plots and fits.json")
    progress: bool = option(False, "per-epoch logs of each grid point")

    def check(self) -> None:
        if self.action == "run" and not self.grid:
            raise ConfigError("scaling run needs --grid")
        if self.action == "analyse" and not (self.grid or self.results):
            raise ConfigError("scaling analyse needs --results <folder with results.csv> or --grid")


@dataclasses.dataclass
class BackbonesConfig(JobConfig):
    command = "backbones"
    count: bool = option(False, "build each backbone and count its parameters")


# ---------------------------------------------------------------------------------------------- commands
def cmd_train(config: zconfig.TrainConfig) -> int:
    from zoobot_tf import evaluate
    from zoobot_tf.training import train

    result = train(config)
    print(f"\nTest metrics ({result.output_dir}/metrics.json), model vs training-set baseline:")
    print(evaluate.format_table(result.metrics))
    total = result.metrics.iloc[-1]
    print(f"\nTest loss {total['loss']:.2f} vs baseline {total['baseline_loss']:.2f}; "
          f"trained in {result.seconds / 60:.1f} min; model: {result.output_dir / 'model.keras'}")
    return 0


def cmd_finetune(config: zconfig.FinetuneConfig) -> int:
    from zoobot_tf.finetuning import finetune_job

    result = finetune_job(config)
    total = result.test_table.iloc[-1].to_dict()
    shown = {k: v if isinstance(v, bool) else round(float(v), 4) for k, v in total.items()  # bools: `collapsed`
             if isinstance(v, (int, float)) and k != "n" and math.isfinite(v)}  # the per-class columns are NaN here
    print("task:", result.model.task)  # e.g. the decision tree a vote catalog was read with
    print("settings:", result.settings)
    print("test:", shown)
    per_part = result.test_table.iloc[:-1].dropna(axis=1, how="all")  # per class (with the confusion matrix)
    print(per_part.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if total.get("collapsed"):
        print("warning: the test predictions collapsed to one class (see metrics.json)")
    print(f"model: {Path(config.output_dir) / 'model.keras'}")
    return 0


def cmd_predict(config: zconfig.PredictConfig) -> int:
    from zoobot_tf.predictions import predict_job

    skipped = predict_job(config)
    print(f"wrote {config.output}" + (f" and {config.hdf5}" if config.hdf5 else "")
          + (f"; skipped {len(skipped)} unreadable image(s), listed in {config.output}.skipped.csv"
             if len(skipped) else ""))
    return 0


def cmd_embed(config: zconfig.EmbedConfig) -> int:
    from zoobot_tf.representations import embed_job

    table = embed_job(config)
    print(f"wrote {len(table)} embeddings to {config.output}")
    return 0


def cmd_export(config: zconfig.ExportConfig) -> int:
    from zoobot_tf.export import export_job

    print(f"Exported {config.model} to {export_job(config)}")
    return 0


def cmd_make_shards(config: zconfig.ShardConfig) -> int:
    from zoobot_tf.data import tfrecords
    from zoobot_tf.data.sources import CatalogSource
    from zoobot_tf.tasks import make_task_for_catalog

    catalog = CatalogSource(config.catalog).catalog
    labels = zconfig._comma_list(config.label_cols) or None
    task = None if config.task == "none" else make_task_for_catalog(config.task, catalog, labels, schema=config.schema)
    common = dict(task=task, label_cols=labels, galaxies_per_shard=config.galaxies_per_shard,
                  stored_size=config.stored_size, overwrite=config.overwrite,
                  remake=config.command_line(overwrite=True))
    if config.runner:
        from zoobot_tf.engines.beam import write_shards_beam

        manifest = write_shards_beam(catalog, config.output_dir, runner=config.runner, workers=config.workers,
                                     beam_options=config.beam_options, **common)
    else:
        manifest = tfrecords.write_shards(catalog, config.output_dir, progress=config.progress, **common)
    for split, entry in manifest["splits"].items():
        print(f"{split}: {entry['n_galaxies']} galaxies in {len(entry['shards'])} shard(s)")
    if manifest["skipped_ids"]:
        print(f"skipped {len(manifest['skipped_ids'])} unreadable image(s): see {config.output_dir}/manifest.json")
    return 0


def cmd_make_synthetic(config: zconfig.SyntheticConfig) -> int:
    from zoobot_tf.data.synthetic import make_synthetic_catalog

    cat = make_synthetic_catalog(config.n_galaxies, config.output_dir, stored_size=config.stored_size,
                                 seed=config.seed, schema=config.schema, progress=config.progress)
    print(f"Wrote {len(cat)} galaxies: {Path(config.output_dir) / 'catalog.csv'}")
    return 0


def cmd_similar(config: SimilarConfig) -> int:
    from zoobot_tf.representations import EmbeddingIndex

    index = EmbeddingIndex.from_table(config.embeddings)
    found = index.neighbours(config.id, k=config.k)
    print(found.to_string(index=False) if len(found) else
          f"{config.embeddings} holds no galaxy but {config.id}: no neighbours to list.")
    return 0


def cmd_tfds_build(config: TFDSBuildConfig) -> int:
    """TFDS's own `build` command with zoobot-tf's builders registered (``--imports zoobot_tf.datasets``),
    without the rest of the `tfds` CLI (whose entry point imports apache_beam for another subcommand)."""
    import simple_parsing
    from tensorflow_datasets.scripts.cli import build

    from zoobot_tf import datasets as zdatasets

    name = config.dataset.split("/")[0]
    if name not in zdatasets.BUILDERS:
        raise ConfigError(f"{config.dataset}: not one of zoobot-tf's builders ({', '.join(zdatasets.BUILDERS)})")
    argv = [name, "--imports", "zoobot_tf.datasets"]
    argv += ["--manual_dir", str(Path(config.manual_dir).expanduser())] if config.manual_dir else []
    argv += ["--data_dir", str(Path(config.data_dir).expanduser())] if config.data_dir else []
    config_name = config.config or (config.dataset.split("/", 1)[1] if "/" in config.dataset else None)
    argv += ["--config", config_name] if config_name else []
    argv += ["--beam_pipeline_options", config.beam_options] if config.beam_options else []
    simple_parsing.parse(build.Args, args=argv).execute()
    return 0


def cmd_scaling(config: ScalingConfig) -> int:
    import json

    import pandas as pd

    from zoobot_tf import scaling

    if config.action == "run":
        scaling.run(config.grid, index=config.index, progress=config.progress)
        return 0
    grid = scaling.load_grid(config.grid) if config.grid else None
    folder = Path(config.results or grid["output_dir"])
    out = Path(config.out or folder)
    results, curves, labels = (folder / name for name in (scaling.RESULTS, scaling.CURVES, scaling.LABELS))
    if not results.exists() and not labels.exists():
        raise ConfigError(f"no {scaling.RESULTS} (grid points) or {scaling.LABELS} (finetuning runs) in {folder}")
    written = []
    if results.exists():
        fits = scaling.analyse(scaling.read_results(folder), out)
        print(scaling.exponent_table(fits))
        written += ["scaling.png/.pdf", "fits.json", "table.md"]
    if curves.exists():  # validation curves of every point: did each converge within its budget
        table = pd.read_csv(curves)
        scaling.plot_curves(table, out, scaling.results_digest(table))
        written.append("convergence.png/.pdf")
    if labels.exists():  # the real-data view: test metrics against the number of finetuning labels
        view = scaling.analyse_labels(pd.read_csv(labels), out)
        (out / "labels_fits.json").write_text(json.dumps(view, indent=2, default=float) + "\n")
        (out / "labels.md").write_text(scaling.labels_table(view))
        print(scaling.labels_table(view))
        written += ["labels.png/.pdf", "labels_fits.json", "labels.md"]
    print(f"wrote {', '.join(written)} in {out}")
    return 0


def cmd_backbones(config: BackbonesConfig) -> int:
    from zoobot_tf.models.backbones import REGISTRY, build_backbone

    print(f"{'name':20s} {'family':12s} {'params (1 ch)':>14s}  timm name")
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        n = f"{build_backbone(name, (64, 64, 1)).count_params() / 1e6:13.2f}M" if config.count else f"{'-':>14s}"
        print(f"{name:20s} {spec.family:12s} {n}  {spec.timm_name or '-'}")
    if not config.count:
        print("(parameter counts: zoobot-tf backbones --count true)")
    return 0


COMMANDS = [
    ("train", zconfig.TrainConfig, cmd_train, "train a model on vote counts (default: synthetic galaxies)"),
    ("finetune", zconfig.FinetuneConfig, cmd_finetune, "finetune a pretrained encoder on labelled galaxies"),
    ("predict", zconfig.PredictConfig, cmd_predict, "predict (with MC-dropout uncertainty) for a catalog, folder "
                                                    "or shards"),
    ("embed", zconfig.EmbedConfig, cmd_embed, "write embeddings (feat_0..) for a catalog, folder or shards"),
    ("similar", SimilarConfig, cmd_similar, "the galaxies most similar to one galaxy, from an embeddings table"),
    ("export", zconfig.ExportConfig, cmd_export, "export a model for TF Serving (saved_models/<name>/<version>/)"),
    ("make-shards", zconfig.ShardConfig, cmd_make_shards, "write a catalog as TFRecord shards (encoded images + "
                                                          "labels)"),
    ("make-synthetic", zconfig.SyntheticConfig, cmd_make_synthetic, "render synthetic galaxies with simulated "
                                                                    "volunteer votes"),
    ("tfds-build", TFDSBuildConfig, cmd_tfds_build, "build one of zoobot-tf's TFDS data sets"),
    ("scaling", ScalingConfig, cmd_scaling, "scaling-law sweeps: run grid points, fit power laws, plot"),
    ("backbones", BackbonesConfig, cmd_backbones, "list the available backbones"),
]
POSITIONAL = {"tfds-build": "dataset", "scaling": "action"}


def build_parser() -> argparse.ArgumentParser:
    import zoobot_tf

    parser = argparse.ArgumentParser(prog="zoobot-tf", description="Galaxy Zoo foundation models in TensorFlow/Keras.")
    parser.add_argument("--version", action="version", version=f"zoobot-tf {zoobot_tf.__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging, and tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cls, fn, help_text in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=(cls.__doc__ or help_text).strip())
        positional = POSITIONAL.get(name)
        if positional:
            field = next(f for f in dataclasses.fields(cls) if f.name == positional)
            p.add_argument(positional, help=field.metadata.get("help", ""))
        cls.add_arguments(p, skip=(positional,) if positional else ())
        p.set_defaults(func=fn, config_cls=cls, command_parser=p)
    return parser


def unrecognized(extras: list[str], command: argparse.ArgumentParser, config_cls) -> str:
    """What argparse would say of arguments a command does not take, with what was probably meant: the
    closest option names for a misspelt one, ``--input X`` for a bare value (every option is named), and
    the place of the options that go before the command."""
    import difflib

    names = [f"--{f.name}" for f in dataclasses.fields(config_cls)] + ["--help"]
    hints = []
    for i, arg in enumerate(extras):
        name = arg.split("=", 1)[0]
        if name in ("--verbose", "-v"):
            hints.append(f"{name} goes before the command (zoobot-tf {name} {command.prog.split()[-1]} ...)")
        elif name.startswith("-"):
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            if close:
                hints.append(f"{arg}: did you mean {' or '.join(close)}?")
        elif i == 0 or not extras[i - 1].startswith("-"):  # not the value of an unknown option
            example = f" (e.g. --input {arg})" if "--input" in names else ""
            hints.append(f"{arg}: options are given by name{example}; see {command.prog} --help")
            break
    return f"unrecognized arguments: {' '.join(extras)}" + "".join(f"\n  {h}" for h in hints)


def _user_errors() -> tuple:
    from zoobot_tf.locks import FolderInUseError

    return (ConfigError, FileNotFoundError, FileExistsError, KeyError, ValueError, TimeoutError, PermissionError,
            FolderInUseError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        args.command_parser.error(unrecognized(extras, args.command_parser, args.config_cls))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = args.config_cls.from_namespace(args)
        return args.func(config) or 0
    except _user_errors() as e:
        if args.verbose:
            raise
        message = str(e).strip() if not isinstance(e, KeyError) else str(e.args[0])
        print(f"zoobot-tf {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
