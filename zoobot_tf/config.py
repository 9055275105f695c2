"""Job configurations: one dataclass per job, every option checked here, once, at the edge.

Each job (train, finetune, predict, embed, export, make-shards, make-synthetic, scaling) has a config
class whose fields are its options. The same fields become the command line's flags
(``zoobot-tf <job> --field value``, :meth:`JobConfig.add_arguments`), the absl flags of the scripts in
``training/`` (:meth:`JobConfig.define_absl_flags`) and the Python API's keyword arguments. Every value is
checked when the config is made (:meth:`JobConfig.validate`): a bad value raises :class:`ConfigError`
naming the option and what it accepts, before any work starts. Options shared by every job (strategy,
precision, seed...) live in :class:`RuntimeConfig`.

    from zoobot_tf.config import TrainConfig
    config = TrainConfig(output_dir="runs/x", batch_size=0)   # ConfigError: --batch_size must be >= 1 ...
"""
from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("one_device", "mirrored", "multi_worker_mirrored", "tpu")
DEFAULT_MODEL = "zoobot_synthetic"  # the packaged default model of predict, embed... (see zoobot_tf.models.resolve)
# the packaged encoder finetune starts from: the GZ1 classes of real SDSS galaxies and of rendered ones
# (training/sdss_mini/README.md): GZ1 balanced accuracy 0.58 against 0.43 from zoobot_synthetic, the rest level
DEFAULT_ENCODER = "zoobot_sdss_mini"


class ConfigError(ValueError):
    """An option with a value it does not accept. The message names the option (as its flag)."""


def option(default: Any = None, help: str = "", *, min: float | None = None, max: float | None = None,
           above: float | None = None, below: float | None = None, choices: Any = None,
           check: Callable[[Any], str | None] | None = None, exists: str | None = None):
    """A config field: default, help text, and what it accepts.

    Args:
        min, max: inclusive bounds; above, below: exclusive bounds (numbers).
        choices: the accepted values, or a function returning them (evaluated when checked).
        check: a function returning an error message (what is accepted) or None.
        exists: "file", "dir" or "path": the value must exist on disk (when given).
    """
    return dataclasses.field(default=default, metadata=dict(help=help, min=min, max=max, above=above, below=below,
                                                            choices=choices, check=check, exists=exists))


def _flag(name: str) -> str:
    return f"--{name}"


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _check_field(f: dataclasses.Field, hint, value) -> Any:
    """Check (and normalise) one field's value; raise ConfigError."""
    meta, flag = f.metadata, _flag(f.name)
    optional = type(None) in typing.get_args(hint)
    base = _base_type(hint)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{flag} is required")
    if base is bool:
        if isinstance(value, str):
            value = _parse_bool(value, flag)
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ConfigError(f"{flag} must be true or false; received {value!r}")
        value = bool(value)
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{flag} must be an integer; received {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{flag} must be an integer; received {value!r}") from None
        if number != int(number):
            raise ConfigError(f"{flag} must be an integer; received {value!r}")
        value = int(number)
    elif base is float:
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{flag} must be a number; received {value!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{flag} must be a finite number; received {value!r}")
    elif base is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{flag} must be a JSON object, e.g. '{{\"drop_path_rate\": 0.1}}'; {e}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{flag} must be a JSON object (a dict); received {value!r}")
    elif base is str:
        value = str(value)
    if base in (int, float):
        bounds = [(meta.get("min"), lambda v, b: v >= b, ">="), (meta.get("max"), lambda v, b: v <= b, "<="),
                  (meta.get("above"), lambda v, b: v > b, ">"), (meta.get("below"), lambda v, b: v < b, "<")]
        for bound, ok, symbol in bounds:
            if bound is not None and not ok(value, bound):
                raise ConfigError(f"{flag} must be {symbol} {bound}{_range_text(meta)}; received {value!r}")
    choices = meta.get("choices")
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(f"{flag} must be one of {', '.join(map(str, allowed))}; received {value!r}")
    exists = meta.get("exists")
    if exists and value is not None:
        path = Path(str(value)).expanduser()
        if not path.exists() or (exists == "file" and not path.is_file()) or (exists == "dir" and not path.is_dir()):
            kind = {"file": "file", "dir": "folder"}.get(exists, "file or folder")
            raise ConfigError(f"{flag} {value}: no such {kind}")
    check = meta.get("check")
    if check is not None:
        problem = check(value)
        if problem:
            raise ConfigError(f"{flag} {problem}; received {value!r}")
    return value


def _range_text(meta) -> str:
    lo = meta.get("min") if meta.get("min") is not None else meta.get("above")
    hi = meta.get("max") if meta.get("max") is not None else meta.get("below")
    if lo is not None and hi is not None:
        left = "[" if meta.get("min") is not None else "("
        right = "]" if meta.get("max") is not None else ")"
        return f" (accepted: {left}{lo}, {hi}{right})"
    return ""


def _accepted_text(meta) -> str:
    parts = [f"{symbol} {meta[key]}" for key, symbol in (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))
             if meta.get(key) is not None]
    return f" [{', '.join(parts)}]" if parts else ""


def _parse_bool(v: str, flag: str = "value") -> bool:
    if v.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if v.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise ConfigError(f"{flag} must be true or false; received {v!r}")


@dataclasses.dataclass
class JobConfig:
    """Base of every job's config: checking, (de)serialisation, command-line and absl flags."""

    command: ClassVar[str] = ""

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Check every field (types, ranges, choices, paths), then the rules between fields."""
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _check_field(f, hints[f.name], getattr(self, f.name)))
        self.check()

    def check(self) -> None:
        """Rules that involve several fields (subclasses)."""

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"Unknown {cls.command or cls.__name__} options: {sorted(unknown)}; "
                              f"options are {sorted(names)}")
        return cls(**d)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def command_line(self, **changes) -> str:
        """The ``zoobot-tf`` command that makes this config (options left at their defaults omitted)."""
        import shlex

        config = self.replace(**changes) if changes else self
        parts = ["zoobot-tf", self.command]
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            text = json.dumps(value) if isinstance(value, dict) else str(value).lower() if isinstance(value, bool) \
                else str(value)
            parts += [f"--{f.name}", text]
        return " ".join(shlex.quote(p) for p in parts)

    # ------------------------------------------------------------------ flags
    @classmethod
    def add_arguments(cls, parser, skip: tuple[str, ...] = ()) -> None:
        """One ``--field`` option per field (except ``skip``), documented from the dataclass; values stay
        strings here and are typed and checked when the config is made."""
        hints = typing.get_type_hints(cls)
        shared = {f.name for f in dataclasses.fields(RuntimeConfig)}
        fields = sorted(dataclasses.fields(cls), key=lambda f: f.name in shared)  # the job's own options first
        for f in fields:
            if f.name in skip:
                continue
            base = _base_type(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            meta = f.metadata
            choices = meta.get("choices")
            shown = f" {{{', '.join(map(str, choices))}}}" if choices is not None and not callable(choices) else ""
            shown += _accepted_text(meta)
            text = f"{meta.get('help', '')}{shown} (default: {default})"
            bare = {"nargs": "?", "const": "true"} if base is bool else {}  # `--balance_classes` alone: true
            parser.add_argument(_flag(f.name), type=str, default=None, dest=f.name,
                                metavar=getattr(base, "__name__", "VALUE").upper(),
                                help=text.replace("%", "%%"), **bare)  # argparse %-formats help: "1%" stays text

    @classmethod
    def from_namespace(cls, namespace):
        """The config from parsed command-line arguments (unset options keep their defaults)."""
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
                  if getattr(namespace, f.name, None) is not None}
        return cls(**values)

    @classmethod
    def define_absl_flags(cls, flag_values=None) -> None:
        """Define one absl flag per field (for the scripts in ``training/``); values are checked by the config."""
        from absl import flags

        flag_values = flag_values or flags.FLAGS
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            flags.DEFINE_string(f.name, None if default is None else str(default) if not isinstance(default, dict)
                                else json.dumps(default), f.metadata.get("help", ""), flag_values=flag_values)

    @classmethod
    def from_absl_flags(cls, flag_values=None):
        from absl import flags

        flag_values = flag_values or flags.FLAGS
        return cls(**{f.name: flag_values[f.name].value for f in dataclasses.fields(cls)
                      if flag_values[f.name].value is not None})


# ---------------------------------------------------------------------------------------------- checks
def _backbones():
    from zoobot_tf.models.backbones import list_backbones

    return list_backbones()


def _task_names():
    from zoobot_tf.tasks import task_names

    return task_names()


def _schema_check(value) -> str | None:
    from zoobot_tf.schemas import get_schema

    try:
        get_schema(value)
    except (KeyError, ValueError, OSError) as e:
        return f"is not a built-in schema nor a readable schema file ({str(e).splitlines()[0][:300]})"
    return None


def _comma_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


@dataclasses.dataclass
class RuntimeConfig(JobConfig):
    """How a job runs, shared by every job: devices, numeric precision, randomness, progress bars."""

    strategy: str = option("one_device", "distribution strategy (one_device | mirrored | multi_worker_mirrored "
                           "| tpu); see docs/distributed.md", choices=STRATEGIES)
    cpu_replicas: int | None = option(None, "with --strategy mirrored on a machine without GPUs: split the CPU "
                                      "into this many replicas", min=1, max=64)
    precision: str = option("float32", "float32 | mixed_bfloat16 (CPUs with AMX: ConvNeXt training and all "
                            "predictions) | mixed_float16 (GPUs)", choices=PRECISIONS)
    seed: int = option(0, "random seed (data order, augmentation, initialisation, MC dropout)", min=0)
    deterministic: bool = option(False, "fixed op and data order: reproducible runs, slower")
    progress: bool = option(True, "progress bars and per-epoch logs")

    def check(self) -> None:
        if self.cpu_replicas is not None and self.strategy != "mirrored":
            raise ConfigError(f"--cpu_replicas applies to --strategy mirrored; received --strategy {self.strategy}")


# ---------------------------------------------------------------------------------------------- train
@dataclasses.dataclass
class TrainConfig(RuntimeConfig):
    """``zoobot-tf train``: train a vote model, evaluate it against a no-image baseline, export it.
    Saved as ``config.json`` in the run folder."""

    command: ClassVar[str] = "train"
    output_dir: str = option("runs/default", "run folder (config, logs, checkpoints, model, metrics, export)")
    # data: one of shards / catalog / tfds, or synthetic galaxies (the default)
    shards: str | None = option(None, "TFRecord shard folder made by make-shards", exists="dir")
    catalog: str | None = option(None, "catalog CSV/Parquet with id_str, file_loc and vote counts (made into "
                                 "shards in the run folder)", exists="file")
    tfds: str | None = option(None, "a prepared TFDS data set with votes (e.g. synthetic_gz, gz_decals/dr5)")
    tfds_data_dir: str | None = option(None, "TFDS data folder (default ~/tensorflow_datasets)")
    synthetic_galaxies: int = option(5000, "without --shards/--catalog/--tfds: render this many synthetic "
                                     "galaxies", min=30, max=10_000_000)
    stored_size: int | None = option(None, "size images are stored at: synthetic galaxies are rendered at it "
                                     "(default: --image_size), catalog images re-encoded at it in the shards "
                                     "(default: as they are)", min=16, max=4096)
    train_fraction: float = option(1.0, "train on a deterministic subset of the training split (scaling "
                                   "studies)", above=0.0, max=1.0)
    schema: str = option("gz_decals_dr5", "decision tree (built-in name or YAML/JSON file)", check=_schema_check)
    # model
    backbone: str = option("resnet_micro", "encoder architecture (see `zoobot-tf backbones`)", choices=_backbones)
    backbone_kwargs: dict | None = option(None, "JSON overrides of the backbone's arguments, e.g. "
                                          "'{\"drop_path_rate\": 0.1}'")
    image_size: int = option(64, "side of the square image the model sees", min=32, max=4096)
    channels: int = option(1, "1 (greyscale) or 3 (colour)", choices=(1, 3))
    crop_fraction: float = option(1.0, "central fraction of each image kept", above=0.0, max=1.0)
    flip: bool = option(True, "flip augmentation (false for tasks that label winding direction)")
    dropout_rate: float = option(0.2, "dropout before the head", min=0.0, below=1.0)
    # optimisation
    batch_size: int = option(64, "per replica; the global batch is batch_size x replicas", min=1, max=65536)
    epochs: int = option(10, "maximum epochs", min=1, max=100_000)
    patience: int = option(8, "early stopping: epochs without improvement of the validation loss", min=1)
    learning_rate: float = option(1e-3, "AdamW learning rate", above=0.0, max=10.0)
    lr_schedule: str = option("constant", "constant; cosine: from --learning_rate down to 1% of it over the "
                              "run's step budget (--epochs x steps per epoch), after --warmup_steps of linear "
                              "warmup; plateau: x0.3 whenever the validation loss has not improved for half of "
                              "--patience epochs (down to 1e-3 of --learning_rate), so that a run ends by its "
                              "patience however large its data (a noisy validation loss can end it early)",
                              choices=("constant", "cosine", "plateau"))
    warmup_steps: int = option(0, "cosine schedule: steps of linear warmup from 0 to --learning_rate", min=0)
    weight_decay: float = option(0.01, "AdamW decoupled weight decay", min=0.0, max=1.0)
    clipnorm: float | None = option(0.3, "global gradient-norm clipping (none: off)", above=0.0)
    steps_per_epoch: int | None = option(None, "optimizer steps per epoch (default: one pass over the "
                                         "training split)", min=1)
    export: bool = option(True, "export the trained model for TF Serving into <output_dir>/export")
    galaxy_cards: bool = option(True, "draw validation galaxies with their predictions in TensorBoard about 10 "
                                "times per run (~0.7 s per card; off for many short runs, e.g. scaling sweeps)")

    def check(self) -> None:
        super().check()
        given = [n for n in ("shards", "catalog", "tfds") if getattr(self, n)]
        if len(given) > 1:
            raise ConfigError(f"give at most one of --shards, --catalog and --tfds; received {', '.join(given)}")
        if self.tfds and self.train_fraction < 1.0:
            raise ConfigError("--train_fraction < 1 needs TFRecord shards (--shards or --catalog); a TFDS source has "
                              "no per-galaxy subset selection here")

    @property
    def runtime(self) -> RuntimeConfig:
        return RuntimeConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(RuntimeConfig)})


# ---------------------------------------------------------------------------------------------- finetune
@dataclasses.dataclass
class FinetuneConfig(RuntimeConfig):
    """``zoobot-tf finetune``: adapt a pretrained encoder to a new task with few labels. Options left at
    ``None`` take the pretrained model's recommended finetuning settings (its model card)."""

    command: ClassVar[str] = "finetune"
    output_dir: str = option("runs/finetune", "run folder (model.keras, metrics.json, history)")
    pretrained: str = option(DEFAULT_ENCODER, "pretrained model: a packaged name, a .keras file, an export folder, "
                             "hf_hub:<repo>, a timm folder or .safetensors, or a backbone name (random encoder)")
    catalog: str | None = option(None, "catalog CSV/Parquet with id_str, file_loc and the label column(s); an "
                                 "optional split column (train/val/test)", exists="file")
    label_cols: str | None = option(None, "label column(s), comma-separated")
    tfds: str | None = option(None, "a prepared TFDS classification set instead of a catalog, e.g. gz_rings")
    tfds_data_dir: str | None = option(None, "TFDS data folder (default ~/tensorflow_datasets)")
    task: str = option("classification", "what to learn", choices=_task_names)
    schema: str | None = option(None, "decision tree for --task votes (default: the built-in tree whose every "
                                "answer column the catalog has, when only one does)", check=_schema_check)
    n_blocks: int | None = option(None, "encoder stages to train from the top (0: linear probe, -1: all; default: "
                                  "the model's recommendation)", min=-1)
    epochs: int | None = option(None, "maximum epochs (default: the model's recommendation)", min=1, max=100_000)
    patience: int | None = option(None, "early stopping patience in epochs (default: the model's recommendation)",
                                  min=1)
    learning_rate: float | None = option(None, "AdamW learning rate of the head (default: the model's "
                                         "recommendation)", above=0.0, max=10.0)
    lr_decay: float | None = option(None, "learning-rate factor per encoder stage below the head", above=0.0, max=1.0)
    weight_decay: float | None = option(None, "AdamW decoupled weight decay", min=0.0, max=1.0)
    batch_size: int | None = option(None, "batch size", min=1, max=65536)
    dropout_rate: float | None = option(None, "dropout before the new head", min=0.0, below=1.0)
    image_size: int | None = option(None, "default: the pretrained model's", min=32, max=4096)
    channels: int | None = option(None, "1 (greyscale) or 3 (colour; a greyscale encoder's stem is spread over "
                                  "the three); default: the pretrained model's", choices=(1, 3))
    crop_fraction: float | None = option(None, "central fraction of each image kept (survey framing; default: "
                                         "the pretrained model's)", above=0.0, max=1.0)
    flip: bool = option(True, "flip augmentation (false for tasks that label winding direction; then see "
                        "--mirror_pairs)")
    mirror_pairs: str = option("", "with --flip false: the classes a mirror image swaps, a:b[,c:d] (GZ1: "
                               "clockwise_spiral:anticlockwise_spiral); predictions then average each galaxy "
                               "with its mirror image, those classes swapped back. Default: the pretrained "
                               "model's card's pairs whose classes the labels have; 'none': no pairs")
    balance_classes: bool = option(True, "weight classes by inverse frequency (classification)")
    label_smoothing: float = option(0.0, "label smoothing of the classification loss (as Zoobot's)", min=0.0,
                                    below=1.0)
    train_batchnorm: bool | None = option(None, "update BatchNorm statistics in the trained stages (default: only "
                                          "for a randomly initialised encoder)")
    cosine_schedule: bool | None = option(None, "cosine learning-rate decay (Zoobot's cosine_schedule)")
    warmup_epochs: int | None = option(None, "epochs of linear learning-rate warmup", min=0, max=10_000)
    split_col: str = option("split", "catalog column with train/val/test (else a 70/15/15 split by id)")
    export: bool = option(False, "also export the finetuned model for TF Serving into <output_dir>/export")

    def check(self) -> None:
        super().check()
        if bool(self.catalog) == bool(self.tfds):
            raise ConfigError("give exactly one of --catalog and --tfds")
        from zoobot_tf.tasks.base import TASK_REGISTRY

        if self.catalog and not self.label_cols and not TASK_REGISTRY[self.task].fixed_label_columns:
            raise ConfigError("--catalog needs --label_cols (the column(s) holding the labels)")
        pairs = self.mirror_pairs and self.mirror_pairs.lower() != "none"
        if pairs and self.flip:
            raise ConfigError(f"--mirror_pairs {self.mirror_pairs} needs --flip false: a flipped training image "
                              "would keep the label of the unflipped galaxy")
        if pairs and self.task != "classification":
            raise ConfigError(f"--mirror_pairs applies to --task classification; received --task {self.task}")

    @property
    def label_list(self) -> list[str]:
        return _comma_list(self.label_cols)


# ---------------------------------------------------------------------------------------------- predict / embed
def _model_help(what: str) -> str:
    return (f"{what}: a packaged name, a .keras file, an export folder, hf_hub:<repo>, a timm folder or "
            f".safetensors (default: the embedded model)")


@dataclasses.dataclass
class EngineConfig(JobConfig):
    """Options of the jobs that can run on Apache Beam (make-shards, predict, embed; zoobot_tf.engines.beam)."""

    runner: str | None = option(None, "run on Apache Beam with this runner (default: in this process)",
                                choices=("direct", "dataflow", "flink", "spark"))
    workers: int = option(2, "worker processes of the direct runner", min=1, max=1024)
    beam_options: str | None = option(None, "more Beam pipeline options, as Beam takes them (e.g. '--project=p "
                                      "--region=europe-west4 --temp_location=gs://bucket/tmp')")

    def check_engine(self) -> None:
        if self.runner is None and self.beam_options:
            raise ConfigError("--beam_options needs --runner")


@dataclasses.dataclass
class InferenceConfig(RuntimeConfig, EngineConfig):
    """Options shared by predict and embed."""

    model: str = option(DEFAULT_MODEL, _model_help("model"))
    input: str = option(None, "catalog CSV/Parquet, folder of JPEG/PNG/FITS, shard folder, or tfds:<name>")
    output: str = option(None, "output table")
    split: str | None = option(None, "only this split of a shard folder or catalog", choices=("train", "val", "test"))
    batch_size: int = option(64, "images per batch", min=1, max=65536)
    chunk: int = option(4096, "galaxies per part written as the job goes (a rerun after a kill continues from "
                        "the parts; a kill loses at most one part)", min=1, max=10_000_000)

    def check(self) -> None:
        super().check()
        self.check_engine()
        if self.strategy != "one_device":
            raise ConfigError(f"--strategy: {self.command} runs on one device; received {self.strategy}")
        for name in ("input", "output"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")
        if not self.input.startswith("tfds:") and not Path(self.input).expanduser().exists():
            raise ConfigError(f"--input {self.input}: no such file or folder")
        if self.runner and self.input.startswith("tfds:"):
            raise ConfigError("--runner reads catalogs, folders and shard folders, not tfds: sets")

    @staticmethod
    def check_output_file(flag: str, value: str | None, example: str, suffixes: tuple[str, ...] = (),
                          shown: str = "") -> None:
        """An output file's name: one of ``suffixes`` (when given), and not an existing folder (found before
        the work, not when the finished file is renamed into place)."""
        if not value:
            return
        if suffixes and Path(value).suffix.lower() not in suffixes:
            raise ConfigError(f"{flag} must end in {shown}; received {value!r}")
        if Path(value).expanduser().is_dir():
            raise ConfigError(f"{flag} {value} is a folder; give a file name, e.g. {Path(value) / example}")


@dataclasses.dataclass
class PredictConfig(InferenceConfig):
    """``zoobot-tf predict``: vote fractions with intervals (or classes, or targets) for every galaxy."""

    command: ClassVar[str] = "predict"
    output: str = option(None, "table: .csv or .parquet")
    hdf5: str | None = option(None, "also write the raw samples (galaxy x output x sample) here")
    n_samples: int = option(5, "MC-dropout samples of the head per galaxy", min=1, max=1000)
    tta: bool = option(False, "test-time augmentation (rotation/flip/crop) on each sample")
    interval: float = option(0.9, "credible interval of the vote fractions", above=0.0, below=1.0)
    zoobot_output: str | None = option(None, "also write Zoobot's predict_on_catalog layout here (.csv: "
                                       "<label>_pred JSON lists of samples; .hdf5: predictions, id_str, label_cols)")

    def check(self) -> None:
        super().check()
        self.check_output_file("--output", self.output, "predictions.csv", (".csv", ".parquet", ".pq"),
                               ".csv or .parquet")
        self.check_output_file("--hdf5", self.hdf5, "samples.h5")
        self.check_output_file("--zoobot_output", self.zoobot_output, "zoobot_predictions.hdf5",
                               (".csv", ".hdf5", ".h5"), ".csv or .hdf5")
        if self.runner and (self.hdf5 or self.zoobot_output):
            raise ConfigError("--hdf5 and --zoobot_output (the raw samples) are written by the single-process job "
                              "only; drop --runner, or them")


@dataclasses.dataclass
class EmbedConfig(InferenceConfig):
    """``zoobot-tf embed``: the pooled encoder output of every galaxy, for similarity search and anomalies."""

    command: ClassVar[str] = "embed"
    output: str = option(None, "table: .parquet, .h5 or .csv")
    pca: int | None = option(None, "keep this many principal components", min=1, max=100_000)
    anomaly_k: int | None = option(None, "add an anomaly_score: mean cosine distance to the k nearest neighbours",
                                   min=1, max=10_000)
    tensorboard: str | None = option(None, "also write TensorBoard projector files here (embeddings, predictions, "
                                     "thumbnails): tensorboard --logdir <it>")
    tensorboard_columns: str | None = option(None, "catalog columns to add to the projector's metadata, "
                                             "comma-separated")
    tensorboard_max: int = option(10_000, "galaxies in the projector (a fixed random subset beyond this)", min=1,
                                  max=1_000_000)

    def check(self) -> None:
        super().check()
        self.check_output_file("--output", self.output, "embeddings.parquet",
                               (".parquet", ".pq", ".h5", ".hdf5", ".csv"), ".parquet, .h5 or .csv")


# ---------------------------------------------------------------------------------------------- other jobs
@dataclasses.dataclass
class ExportConfig(JobConfig):
    """``zoobot-tf export``: a TF Serving export (``<output_dir>/<name>/<version>/``)."""

    command: ClassVar[str] = "export"
    model: str = option(None, _model_help("model to export"))
    output_dir: str = option("saved_models", "base folder of TF Serving model folders")
    name: str = option("zoobot", "model name (TF Serving's MODEL_NAME)",
                       check=lambda v: None if v and all(c.isalnum() or c in "-_" for c in v)
                       else "must be letters, digits, - and _")
    mc_samples: int = option(5, "dropout samples in the predict_mc signature", min=1, max=1000)

    def check(self) -> None:
        if not self.model:
            raise ConfigError("--model is required")


@dataclasses.dataclass
class ShardConfig(EngineConfig):
    """``zoobot-tf make-shards``: a catalog as TFRecord shards of encoded images, labels and a manifest."""

    command: ClassVar[str] = "make-shards"
    catalog: str = option(None, "CSV/Parquet with id_str, file_loc and labels", exists="file")
    output_dir: str = option(None, "shard folder to write")
    task: str = option("votes", "what the labels are (none: images only, for predictions)",
                       choices=lambda: _task_names() + ["none"])
    schema: str = option("gz_decals_dr5", "decision tree of the vote columns (--task votes)", check=_schema_check)
    label_cols: str | None = option(None, "comma-separated label columns (classification/regression)")
    galaxies_per_shard: int = option(1024, "galaxies per shard file", min=1, max=10_000_000)
    stored_size: int | None = option(None, "re-encode images as JPEG at this size (default: keep the files' "
                                     "bytes)", min=16, max=4096)
    overwrite: bool = option(False, "replace an existing shard folder")
    progress: bool = option(True, "progress bar")

    def check(self) -> None:
        self.check_engine()
        for name in ("catalog", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required")


@dataclasses.dataclass
class SyntheticConfig(JobConfig):
    """``zoobot-tf make-synthetic``: render galaxies with simulated volunteer votes."""

    command: ClassVar[str] = "make-synthetic"
    output_dir: str = option(None, "folder for images/ and catalog.csv")
    n_galaxies: int = option(5000, "galaxies to render", min=1, max=10_000_000)
    stored_size: int = option(64, "image side in pixels", min=16, max=4096)
    seed: int = option(0, "random seed (galaxy i is the same for any --n_galaxies)", min=0)
    schema: str = option("gz_decals_dr5", "decision tree of the simulated votes (the GZ DECaLS DR5/DR8 tree)",
                         check=_schema_check)
    progress: bool = option(True, "progress bar")

    def check(self) -> None:
        if not self.output_dir:
            raise ConfigError("--output_dir is required")
