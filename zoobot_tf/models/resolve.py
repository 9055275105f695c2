"""One way to name a model, used by every entry point (CLI and API): :func:`load_model`.

Accepted forms, tried in this order:

* a :class:`~zoobot_tf.models.zoobot.Zoobot` in memory: returned as is;
* a packaged model's name (:func:`packaged_models`, e.g. ``zoobot_synthetic``, the default): its
  ``model.keras``, shipped inside the wheel;
* ``hf_hub:<repo>``: Zoobot v2 timm weights from the HuggingFace Hub (needs ``zoobot-tf[hub]``);
* a path: a ``.keras`` file; an export folder (``saved_models/<name>`` or a version folder inside it);
  a timm snapshot folder (``config.json`` + ``model.safetensors``); a ``.safetensors``/``.pth`` file;
* a backbone name from the registry (``resnet18``, ``convnext_nano``...): a randomly initialised model,
  the baseline finetuning is compared against.

Anything else raises :class:`ModelNotFoundError`, naming these forms. A file that exists but is not what
its name says (a corrupt ``.keras``, a SavedModel without zoobot-tf metadata, timm weights of another
architecture) raises :class:`ModelFileError` saying what the file is and what was expected.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import zoobot_tf
from zoobot_tf.pretrained import HF_PREFIX

ACCEPTED = ("a packaged model name ({packaged}), hf_hub:<repo>, a .keras file, an export folder "
            "(saved_models/<name>[/<version>]), a timm folder (config.json + model.safetensors) or "
            ".safetensors/.pth file, or a backbone name for a random encoder ({backbones})")


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that is none of the accepted forms."""


class ModelFileError(ValueError):
    """A model file that exists but cannot be used as a zoobot-tf model."""


def _packaged_roots() -> list[Path]:
    here = Path(zoobot_tf.__file__).resolve().parent
    # installed wheel: zoobot_tf/saved_models (setup.py maps the repository's saved_models/ there);
    # a checkout or editable install: the repository's saved_models/
    return [here / "saved_models", here.parent / "saved_models"]


def packaged_models() -> dict[str, Path]:
    """{name: folder} of the models shipped with zoobot-tf (TF Serving layout, ``<name>/<version>/``)."""
    found: dict[str, Path] = {}
    for root in _packaged_roots():
        if root.is_dir():
            for folder in sorted(root.iterdir()):
                if folder.is_dir() and folder.name not in found and _versions(folder):
                    found[folder.name] = folder
    return found


def _versions(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def _accepted() -> str:
    from zoobot_tf.models.backbones import list_backbones

    names = list_backbones()
    return ACCEPTED.format(packaged=", ".join(packaged_models()) or "none installed",
                           backbones=", ".join(names[:6]) + ", ...")


def _is_version(folder: Path) -> bool:
    # a SavedModel, or (in the wheel) an export's assets.extra alone: the Keras model and its metadata
    return (folder / "saved_model.pb").exists() or (folder / "assets.extra" / "zoobot_metadata.json").exists()


def export_version(folder: Path) -> Path | None:
    """The version folder of an export: ``folder`` itself if it is one, else its highest integer-named
    subfolder that is one; None if neither."""
    if _is_version(folder):
        return folder
    for v in reversed(_versions(folder)):
        if _is_version(folder / str(v)):
            return folder / str(v)
    return None


def _load_keras(path: Path, compile: bool = True):
    import keras

    from zoobot_tf.models.zoobot import Zoobot  # registers every class the archive names (see its module)

    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a Keras archive (a .keras file is a zip file); expected a model saved "
                             f"with model.save('....keras') by zoobot-tf.")
    try:
        model = keras.models.load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad archive; say what the file is
        raise ModelFileError(f"{path} is a zip file but not a loadable zoobot-tf Keras model "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:300]}).") from None
    if not isinstance(model, Zoobot):
        raise ModelFileError(f"{path} holds a Keras {type(model).__name__}, not a zoobot-tf Zoobot model; build one "
                             f"with zoobot_tf.Zoobot(...) or load its encoder with Zoobot(backbone=<keras model>).")
    return model


def _load_export(folder: Path, compile: bool = True):
    from zoobot_tf.export import KERAS_FILE, METADATA

    version = export_version(folder)
    if version is None:
        return None
    extra = version / "assets.extra"
    if not (extra / METADATA).exists():
        raise ModelFileError(f"{version} is a SavedModel without zoobot-tf metadata (assets.extra/{METADATA}); "
                             f"expected an export written by `zoobot-tf export`.")
    if not (extra / KERAS_FILE).exists():
        raise ModelFileError(f"{version} is a zoobot-tf export without its Keras model (assets.extra/{KERAS_FILE}), "
                             f"so it can serve but cannot be loaded for predictions or finetuning here.")
    return _load_keras(extra / KERAS_FILE, compile)


def is_random_init(spec) -> bool:
    """True when ``spec`` names a registry backbone (not a path): a randomly initialised encoder."""
    from zoobot_tf.models.backbones import REGISTRY

    return isinstance(spec, str) and spec in REGISTRY and not Path(spec).exists() and spec not in packaged_models()


def load_model(spec, image_size: int | None = None, channels: int | None = None, schema="gz_decals_dr5",
               compile: bool = True):
    """The Zoobot model ``spec`` names (see the module docstring for the accepted forms).

    ``image_size``/``channels`` apply where the source does not fix them (timm weights, random encoders);
    ``schema`` is the head of models made from bare encoders (timm weights, random encoders).
    ``compile=False`` loads a saved model without its loss, metrics and optimizer, all that predictions,
    embeddings and a finetuning's encoder need: no optimizer slots (two more copies of the trainable
    weights in memory) and a faster load.
    """
    from zoobot_tf.models.zoobot import Zoobot

    if isinstance(spec, Zoobot):
        return spec
    text = str(spec)
    packaged = packaged_models()
    if text in packaged and not Path(text).exists():
        return _load_export(packaged[text], compile)
    if text.startswith(HF_PREFIX):
        from zoobot_tf.pretrained import load_timm

        return load_timm(text, image_size=image_size or 224, channels=channels, schema=schema)
    path = Path(text).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".keras":
            return _load_keras(path, compile)
        if path.is_dir():
            model = _load_export(path, compile)
            if model is not None:
                return model
            if (path / "config.json").exists() or any(path.glob("*.safetensors")):
                from zoobot_tf.pretrained import load_timm

                return load_timm(path, image_size=image_size or 224, channels=channels, schema=schema)
            if (path / "assets.extra").exists() or (path / "variables").exists():
                raise ModelFileError(f"{path} looks like a SavedModel folder but holds no saved_model.pb.")
            inside = sorted({p.parent.parent for p in path.glob("*/*/saved_model.pb") if p.parent.name.isdigit()})
            if inside:  # e.g. the --output_dir of zoobot-tf export, which writes <output_dir>/<name>/<version>
                raise ModelFileError(f"{path} is not itself a model; it holds the export folder(s) "
                                     f"{', '.join(str(p) for p in inside[:5])}: pass one of those.")
        if path.is_file() and path.suffix in (".safetensors", ".pth", ".pt", ".bin"):
            from zoobot_tf.pretrained import load_timm

            return load_timm(path, image_size=image_size or 224, channels=channels, schema=schema)
        if path.is_file() and path.name.endswith(".weights.h5"):
            raise ModelFileError(f"{path} holds weights only; load them into a model built with the same "
                                 f"architecture (model.load_weights), or pass the run's model.keras.")
        raise ModelFileError(f"{path} is not a model zoobot-tf can read; expected {_accepted()}.")
    if is_random_init(text):
        from zoobot_tf.tasks import VoteTask

        return Zoobot(task=VoteTask(schema), backbone=text, image_size=image_size or 224, channels=channels or 1)
    raise ModelNotFoundError(f"No model {text!r}: not a file or folder, nor a known name. Accepted: {_accepted()}.")


def model_card(name: str) -> dict:
    """The metadata of a packaged model (its export's zoobot_metadata.json)."""
    from zoobot_tf.export import METADATA

    folder = packaged_models().get(name)
    if folder is None:
        raise ModelNotFoundError(f"No packaged model {name!r}; packaged: {', '.join(packaged_models())}")
    return json.loads((export_version(folder) / "assets.extra" / METADATA).read_text())
