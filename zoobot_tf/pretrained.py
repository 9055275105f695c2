"""Galaxy-pretrained encoders: convert Zoobot v2's timm (PyTorch) weights into zoobot-tf backbones.

    import zoobot_tf as zt
    model = zt.load_pretrained("hf_hub:mwalmsley/zoobot-encoder-convnext_nano")   # needs the network
    model = zt.load_pretrained("downloads/zoobot-encoder-convnext_nano/")          # a local snapshot
    tuner = zt.Finetuner(model, task="classification", class_names=[...], n_blocks=2)

The registry's backbones have timm's structure and layer names (``stages.0.blocks.1.conv_dw``), so
each timm tensor has exactly one Keras home. The converter transposes NCHW kernels to NHWC
(conv ``(O, I, kh, kw) -> (kh, kw, I, O)``, depthwise ``(C, 1, kh, kw) -> (kh, kw, C, 1)``, linear
``(O, I) -> (I, O)``), maps BatchNorm ``running_mean/var`` to ``moving_mean/variance``, adapts the
stem between colour and greyscale (summing, or splitting, the input-channel weights), and raises one
error naming every unmatched, missing or mis-shaped tensor. What keeps outputs identical: PyTorch's
symmetric stride-2 padding, timm's BatchNorm eps 1e-5 (tf_ ports 1e-3) and LayerNorm eps 1e-6, exact
GELU, and ConvNeXt's LayerNorm after pooling are all built into the backbones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import keras
import numpy as np

from zoobot_tf.models.backbones.common import LayerScale
from zoobot_tf.models.stem import adapt_input_channels, is_channel_mismatch
from zoobot_tf.ops.layers import Pointwise

HF_PREFIX = "hf_hub:"
# timm architecture -> zoobot-tf backbone
TIMM_TO_BACKBONE = {
    **{f"convnext_{s}": f"convnext_{s}" for s in ("atto", "femto", "pico", "nano", "tiny", "small", "base",
                                                  "large")},
    "efficientnet_b0": "efficientnet_b0", "efficientnet_b1": "efficientnet_b1", "efficientnet_b2": "efficientnet_b2",
    "efficientnet_b3": "efficientnet_b3", "efficientnet_b4": "efficientnet_b4",
    "tf_efficientnetv2_b0": "efficientnetv2_b0", "tf_efficientnetv2_s": "efficientnetv2_s",
    "resnet18": "resnet18", "resnet34": "resnet34", "resnet50": "resnet50", "resnet101": "resnet101",
}
ZOOBOT_V2_ENCODERS = {  # HuggingFace repos of Zoobot v2 (Walmsley et al. 2024), published test loss on GZ Evo
    "convnext_pico": ("mwalmsley/zoobot-encoder-convnext_pico", 9.1),
    "convnext_nano": ("mwalmsley/zoobot-encoder-convnext_nano", 15.6),
    "convnext_tiny": ("mwalmsley/zoobot-encoder-convnext_tiny", 28.6),
    "convnext_small": ("mwalmsley/zoobot-encoder-convnext_small", 50.2),
    "convnext_base": ("mwalmsley/zoobot-encoder-convnext_base", 88.6),
    "efficientnet_b0": ("mwalmsley/zoobot-encoder-efficientnet_b0", 5.3),
    "resnet18": ("mwalmsley/zoobot-encoder-resnet18", 11.7),
    "resnet50": ("mwalmsley/zoobot-encoder-resnet50", 25.6),
}
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("head.fc.", "fc.", "classifier.")


class ConversionError(ValueError):
    """timm tensors that do not fit the Keras backbone; the message names each one."""


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A timm state dict as numpy arrays: ``.safetensors`` (no torch needed) or a PyTorch checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    try:
        import torch
    except ImportError:
        raise ImportError(f"Reading {path.name} needs PyTorch; convert it to .safetensors, or install torch.") from None
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    out = {}
    for k, v in obj.items():
        k = k[len("encoder."):] if k.startswith("encoder.") else k
        out[k[len("model."):] if k.startswith("model.") else k] = v.detach().float().numpy()
    return out


def _layer_tensors(layer) -> list[tuple[str, object]]:
    """(timm key, keras variable) pairs of one Keras layer."""
    name = layer.name
    if isinstance(layer, LayerScale):
        return [(name, layer.gamma)]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        pairs = [(f"{name}.weight", layer.kernel)]
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        pairs = [(f"{name}.weight", layer.kernel)]
    elif isinstance(layer, keras.layers.BatchNormalization):
        return [(f"{name}.weight", layer.gamma), (f"{name}.bias", layer.beta),
                (f"{name}.running_mean", layer.moving_mean), (f"{name}.running_var", layer.moving_variance)]
    elif isinstance(layer, keras.layers.LayerNormalization):
        return [(f"{name}.weight", layer.gamma), (f"{name}.bias", layer.beta)]
    else:
        raise ConversionError(f"No timm mapping for layer {name!r} ({type(layer).__name__})")
    if getattr(layer, "use_bias", False):
        pairs.append((f"{name}.bias", layer.bias))
    if isinstance(layer, Pointwise) and layer.layer_scale is not None:
        pairs.append((layer.layer_scale_name, layer.gamma))
    return pairs


def _to_keras(value: np.ndarray, variable, layer) -> np.ndarray:
    """Reorder one timm tensor into the Keras variable's layout (and adapt the stem's channels)."""
    target = tuple(variable.shape)
    v = np.asarray(value, dtype=np.float32)
    if isinstance(layer, keras.layers.DepthwiseConv2D) and v.ndim == 4:
        v = v.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    elif isinstance(layer, keras.layers.Conv2D) and v.ndim == 4:
        v = v.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        if is_channel_mismatch(v.shape, target):
            v = adapt_input_channels(v, target[2])
    elif isinstance(layer, keras.layers.Dense) and v.ndim >= 2:
        v = v.reshape(v.shape[0], -1).T  # (O, I[, 1, 1]) -> (I, O): ConvMlp 1x1 convs and Linear alike
    return v


def convert_state_dict(state_dict: Mapping[str, np.ndarray], encoder: keras.Model) -> dict:
    """Load a timm state dict into a registry backbone built with the same architecture.

    Raises :class:`ConversionError` listing every unmatched, missing or mis-shaped tensor (nothing is
    assigned unless everything fits). Returns a report: number of tensors loaded and keys ignored.
    """
    assignments, missing, bad_shape = [], [], []
    used = set()
    for layer in encoder.layers:
        if not layer.weights or isinstance(layer, keras.layers.InputLayer):
            continue
        for key, variable in _layer_tensors(layer):
            if key not in state_dict:
                missing.append(key)
                continue
            value = _to_keras(state_dict[key], variable, layer)
            if value.shape != tuple(variable.shape):
                bad_shape.append(f"{key}: timm {tuple(np.shape(state_dict[key]))} -> {value.shape}, "
                                 f"Keras needs {tuple(variable.shape)}")
                continue
            assignments.append((variable, value))
            used.add(key)
    ignored = [k for k in state_dict if k.endswith(_IGNORED_SUFFIXES) or k.startswith(_IGNORED_PREFIXES)]
    unmatched = sorted(set(state_dict) - used - set(ignored))
    problems = []
    if unmatched:
        problems.append(f"{len(unmatched)} timm tensor(s) with no Keras home: {unmatched[:20]}")
    if missing:
        problems.append(f"{len(missing)} Keras weight(s) with no timm tensor: {missing[:20]}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatch(es): {bad_shape[:20]}")
    if problems:
        raise ConversionError("The timm weights do not fit this backbone:\n  - " + "\n  - ".join(problems))
    for variable, value in assignments:
        variable.assign(value)
    return {"loaded": len(assignments), "ignored": sorted(ignored)}


def _snapshot_files(folder: Path) -> tuple[Path, dict]:
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    for name in ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth"):
        if (folder / name).exists():
            return folder / name, config
    raise FileNotFoundError(f"No model.safetensors / pytorch_model.bin in {folder}")


def _download(repo: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError("Downloading from the HuggingFace Hub needs huggingface_hub: "
                          "pip install 'zoobot-tf[hub]'") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=["config.json", "*.safetensors"]))
    except Exception as e:  # offline, proxy, rate limit: say what to fetch by hand
        raise RuntimeError(
            f"Could not download {repo} from the HuggingFace Hub ({type(e).__name__}: {e}).\n"
            f"Without network access, fetch these two files on a connected machine:\n"
            f"  https://huggingface.co/{repo}/resolve/main/config.json\n"
            f"  https://huggingface.co/{repo}/resolve/main/model.safetensors\n"
            f"put them in one folder, and call load_pretrained('<that folder>').") from None


def is_timm_source(name_or_path) -> bool:
    """True for ``hf_hub:<repo>``, a timm snapshot folder, or a ``.safetensors``/``.pth`` weights file."""
    text = str(name_or_path)
    if text.startswith(HF_PREFIX):
        return True
    path = Path(text).expanduser()
    if path.is_file():
        return path.suffix in (".safetensors", ".pth", ".pt", ".bin")
    return path.is_dir() and not any(path.glob("**/saved_model.pb")) and (
        (path / "config.json").exists() or any(path.glob("*.safetensors")))


def load_timm(name_or_path: str | Path, architecture: str | None = None, image_size: int = 224,
              channels: int | None = None, schema="gz_decals_dr5", **model_kwargs):
    """A Zoobot model whose encoder holds converted timm weights (Zoobot v2's encoders), with a fresh
    Dirichlet-multinomial head over ``schema`` (timm encoders carry no head).

    Args:
        name_or_path: ``hf_hub:<repo>`` (downloads), a folder holding ``config.json`` and
            ``model.safetensors`` (a HuggingFace snapshot), or a ``.safetensors``/``.pth`` file (give
            ``architecture``).
        architecture: timm architecture name when the files do not say (e.g. ``convnext_nano``).
        channels: 1 or 3; default: what the weights were trained on (the stem's input channels).
    """
    from zoobot_tf.models.zoobot import Zoobot
    from zoobot_tf.tasks import VoteTask

    source = str(name_or_path)
    if source.startswith(HF_PREFIX):
        folder = _download(source[len(HF_PREFIX):])
        weights, config = _snapshot_files(folder)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Pretrained weights not found: {path}")
        weights, config = _snapshot_files(path) if path.is_dir() else (path, {})
    arch = architecture or config.get("architecture") or config.get("model_name")
    if arch is None:
        raise ValueError(f"Which architecture are the weights in {weights}? Pass architecture='convnext_nano' etc.")
    if arch not in TIMM_TO_BACKBONE:
        raise ValueError(f"No zoobot-tf backbone for timm architecture {arch!r}; supported: "
                         f"{', '.join(sorted(TIMM_TO_BACKBONE))}")
    state = read_state_dict(weights)
    stem = next((v for k, v in state.items() if k in ("stem.0.weight", "conv_stem.weight", "conv1.weight")), None)
    in_chans = int(stem.shape[1]) if stem is not None else 3
    model = Zoobot(task=VoteTask(schema), backbone=TIMM_TO_BACKBONE[arch], image_size=image_size,
                   channels=channels or in_chans, **model_kwargs)
    convert_state_dict(state, model.encoder)
    return model


def load_pretrained(name_or_path, architecture: str | None = None, image_size: int = 224,
                    channels: int | None = None, schema="gz_decals_dr5", **model_kwargs):
    """A pretrained Zoobot model, ready for :class:`~zoobot_tf.finetuning.Finetuner`: Zoobot v2 timm weights
    (``hf_hub:<repo>``, a snapshot folder or weights file; see :func:`load_timm`), or anything
    :func:`zoobot_tf.models.resolve.load_model` accepts (a packaged name, a ``.keras`` file, an export)."""
    if is_timm_source(name_or_path):
        return load_timm(name_or_path, architecture, image_size, channels, schema, **model_kwargs)
    from zoobot_tf.models.resolve import load_model

    return load_model(name_or_path, image_size=image_size, channels=channels, schema=schema)
