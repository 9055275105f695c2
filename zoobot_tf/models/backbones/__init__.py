"""Backbone registry: build any encoder by name, offline, with random initialisation.

Every backbone maps images scaled to [0, 1], shaped (H, W, channels), to a pooled embedding.
Names match timm's where the structure matches timm's (``convnext_nano``, ``efficientnet_b0``,
``resnet50``...), so Zoobot v2 weights convert one to one (:mod:`zoobot_tf.pretrained`).

    >>> from zoobot_tf.models.backbones import build_backbone, list_backbones
    >>> encoder = build_backbone("convnext_nano", input_shape=(224, 224, 1))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import keras

from zoobot_tf.models.backbones import convnext, efficientnet, kerascv, resnet
from zoobot_tf.ops.layers import fold_batch_norms, fuse_batch_norm_swish, fuse_channel_scale, fuse_mlp_gelu


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str
    build: Callable[..., keras.Model]
    stage_of: Callable[[str], int]
    kwargs: dict = field(default_factory=dict)
    timm_name: str | None = None
    description: str = ""


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> None:
    REGISTRY[spec.name] = spec


for _name, (_depths, _dims, _conv_mlp) in convnext.VARIANTS.items():
    register(BackboneSpec(_name, "convnext", convnext.build_convnext, convnext.stage_of,
                          dict(depths=_depths, dims=_dims, conv_mlp=_conv_mlp), timm_name=_name))
# A very small ConvNeXt for tests, smoke runs and the low end of scaling studies.
register(BackboneSpec("convnext_zepto", "convnext", convnext.build_convnext, convnext.stage_of,
                      dict(depths=(1, 1, 2, 1), dims=(16, 32, 64, 128), conv_mlp=True),
                      description="tiny ConvNeXt (not a timm model) for tests and scaling studies"))

for _name, (_arch, _cm, _dm, _stem, _pad, _eps) in efficientnet.VARIANTS.items():
    _timm = _name if _pad == "torch" else "tf_" + _name
    register(BackboneSpec(_name, "efficientnet", efficientnet.build_efficientnet, efficientnet.stage_of,
                          dict(arch=tuple(_arch), channel_multiplier=_cm, depth_multiplier=_dm,
                               stem_channels=_stem, padding=_pad, bn_eps=_eps), timm_name=_timm))

for _name, (_block, _layers) in resnet.VARIANTS.items():
    register(BackboneSpec(_name, "resnet", resnet.build_resnet, resnet.stage_of,
                          dict(block=_block, layers_per_stage=_layers), timm_name=_name))
register(BackboneSpec("resnet_micro", "resnet", resnet.build_resnet, resnet.stage_of,
                      dict(block="basic", layers_per_stage=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
                      description="tiny ResNet (not a timm model) for tests and scaling studies"))

for _name, _kwargs in kerascv.VARIANTS.items():
    register(BackboneSpec(_name, "keras_cv", kerascv.build_kerascv, kerascv.stage_of, dict(_kwargs),
                          description="keras-cv backbone built from explicit arguments (offline)"))


def list_backbones() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"Unknown backbone. Received: backbone={name!r}. "
                       f"Available: {', '.join(list_backbones())}") from None


def build_backbone(name: str, input_shape=(224, 224, 1), name_scope: str = "encoder", **overrides) -> keras.Model:
    """Build the encoder ``name`` for images of ``input_shape`` (H, W, C); ``overrides`` replace the
    registry's arguments (e.g. ``drop_path_rate=0.1`` or ``dims=(...)``)."""
    spec = get_spec(name)
    h, w, c = input_shape
    if h is not None and w is not None and min(h, w) < 32:
        raise ValueError(f"Backbones need images of at least 32x32 pixels. Received: input_shape={tuple(input_shape)}")
    if c not in (1, 3):
        raise ValueError(f"Backbones take 1 (greyscale) or 3 (colour) channels. Received: channels={c}")
    encoder = spec.build(input_shape=tuple(input_shape), name=name_scope, **{**spec.kwargs, **overrides})
    fold_batch_norms(encoder)  # fast path: conv -> batch norm pairs run as one convolution at inference
    fuse_batch_norm_swish(encoder)  # fast path: batch norm -> SiLU pairs train as one op, in less memory
    fuse_mlp_gelu(encoder)  # fast path: ConvNeXt's MLP trains without keeping its GELU's output
    fuse_channel_scale(encoder)  # fast path: squeeze-excite's gate and the projection train as one MatMul
    return encoder


def stage_groups(encoder: keras.Model, backbone: str | None) -> list[list[keras.layers.Layer]]:
    """The encoder's layers grouped by stage, from the input (stem) to the output (head).

    Used to freeze/unfreeze the last n blocks and to decay learning rates block by block. Encoders that
    are not from the registry (``backbone=None``), or whose layer names carry no stage, are split into 6
    groups of weighted layers in order.
    """
    stage_of = get_spec(backbone).stage_of if backbone is not None else (lambda name: -1)
    weighted = [l for l in encoder.layers if l.weights]
    keyed = [(stage_of(l.name), l) for l in weighted]
    if any(k < 0 for k, _ in keyed):  # unknown layer names: split evenly in order
        n = 6
        keyed = [(i * n // max(len(weighted), 1), l) for i, l in enumerate(weighted)]
    groups: dict[int, list] = {}
    for k, l in keyed:
        groups.setdefault(k, []).append(l)
    return [groups[k] for k in sorted(groups)]
