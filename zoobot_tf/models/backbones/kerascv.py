"""keras-cv backbones (CSPDarkNet, MiT/SegFormer), built from explicit arguments so they work offline.

keras-cv's named presets fetch configs from the network; the base classes built from
explicit arguments do not (REFERENCE section 6). They are wrapped with global average pooling
so they give a pooled embedding like every other backbone here.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

VARIANTS = {
    "cspdarknet_tiny": dict(kind="cspdarknet", stackwise_channels=(48, 96, 192, 384), stackwise_depth=(1, 3, 3, 1)),
    "cspdarknet_s": dict(kind="cspdarknet", stackwise_channels=(64, 128, 256, 512), stackwise_depth=(1, 3, 3, 1)),
    "mit_b0": dict(kind="mit", depths=(2, 2, 2, 2), embedding_dims=(32, 64, 160, 256)),
}


def build_kerascv(input_shape: Sequence[int], kind: str, name: str = "encoder", **kwargs) -> keras.Model:
    import keras_cv  # imported lazily: it is slow to import and only these backbones need it

    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    if kind == "cspdarknet":
        base = keras_cv.models.CSPDarkNetBackbone(
            stackwise_channels=list(kwargs["stackwise_channels"]), stackwise_depth=list(kwargs["stackwise_depth"]),
            include_rescaling=False, input_shape=tuple(input_shape))
    elif kind == "mit":
        base = keras_cv.models.MiTBackbone(
            depths=list(kwargs["depths"]), embedding_dims=list(kwargs["embedding_dims"]),
            include_rescaling=False, input_shape=tuple(input_shape))
    else:
        raise ValueError(f"Unknown keras-cv backbone kind. Received: kind={kind!r}")
    x = base(inputs)
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, x, name=name)


def stage_of(layer_name: str) -> int:
    return -1  # keras-cv layer names carry no stage index: grouped evenly by order instead
