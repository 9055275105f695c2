"""ResNet (He et al. 2016) as timm builds it (v1.5: the stride sits in the 3x3 convolution).

PyTorch pads stride-2 convolutions symmetrically; explicit zero padding reproduces that, where
Keras' 'same' would pad bottom/right only. BatchNorm eps is timm's 1e-5.
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from zoobot_tf.models.backbones.common import (
    DropPath,
    batch_norm,
    conv2d,
    drop_path_rates,
)
from zoobot_tf.ops.layers import GlobalAveragePooling2D

# name: block type, blocks per stage
VARIANTS = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


def _basic(x, width, stride, prefix, downsample, drop_path):
    shortcut = x
    y = conv2d(x, width, 3, stride, name=f"{prefix}.conv1")
    y = batch_norm(y, f"{prefix}.bn1", activation="relu")
    y = conv2d(y, width, 3, 1, name=f"{prefix}.conv2")
    y = batch_norm(y, f"{prefix}.bn2")
    if downsample:
        shortcut = conv2d(x, width, 1, stride, name=f"{prefix}.downsample.0")
        shortcut = batch_norm(shortcut, f"{prefix}.downsample.1")
    if drop_path > 0:
        y = DropPath(drop_path, name=f"{prefix}.drop_path")(y)
    y = layers.Add(name=f"{prefix}.add")([y, shortcut])
    return layers.Activation("relu", name=f"{prefix}.act")(y)


def _bottleneck(x, width, stride, prefix, downsample, drop_path):
    shortcut = x
    y = conv2d(x, width, 1, 1, name=f"{prefix}.conv1")
    y = batch_norm(y, f"{prefix}.bn1", activation="relu")
    y = conv2d(y, width, 3, stride, name=f"{prefix}.conv2")
    y = batch_norm(y, f"{prefix}.bn2", activation="relu")
    y = conv2d(y, width * 4, 1, 1, name=f"{prefix}.conv3")
    y = batch_norm(y, f"{prefix}.bn3")
    if downsample:
        shortcut = conv2d(x, width * 4, 1, stride, name=f"{prefix}.downsample.0")
        shortcut = batch_norm(shortcut, f"{prefix}.downsample.1")
    if drop_path > 0:
        y = DropPath(drop_path, name=f"{prefix}.drop_path")(y)
    y = layers.Add(name=f"{prefix}.add")([y, shortcut])
    return layers.Activation("relu", name=f"{prefix}.act")(y)


def build_resnet(
    input_shape: Sequence[int],
    block: str = "basic",
    layers_per_stage: Sequence[int] = (2, 2, 2, 2),
    widths: Sequence[int] = (64, 128, 256, 512),
    stem_width: int = 64,
    stem_pool: bool = True,
    drop_path_rate: float = 0.0,
    name: str = "encoder",
) -> keras.Model:
    """ResNet encoder: (H, W, C) in [0, 1] -> pooled features (widths[-1] x expansion).

    ``stem_pool=False`` drops the stem's max pooling (4x more resolution in the first stage), for
    small images where the standard /4 stem erases fine structure such as spiral arms.
    """
    if block not in ("basic", "bottleneck"):
        raise ValueError(f"block must be 'basic' or 'bottleneck'. Received: block={block!r}")
    fn, expansion = (_basic, 1) if block == "basic" else (_bottleneck, 4)
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    x = conv2d(inputs, stem_width, 7, 2, name="conv1")
    x = batch_norm(x, "bn1", activation="relu")
    # max pooling after ReLU: zero padding equals PyTorch's -inf padding (all values are >= 0)
    if stem_pool:
        x = layers.ZeroPadding2D(1, name="maxpool.pad")(x)
        x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    in_ch = stem_width
    rates = drop_path_rates(layers_per_stage, drop_path_rate)
    for i, (n, width) in enumerate(zip(layers_per_stage, widths)):
        for j in range(n):
            stride = 2 if (i > 0 and j == 0) else 1
            downsample = j == 0 and (stride != 1 or in_ch != width * expansion)
            x = fn(x, width, stride, f"layer{i + 1}.{j}", downsample, rates[i][j])
            in_ch = width * expansion
    x = GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, x, name=name)


def stage_of(layer_name: str) -> int:
    if layer_name.startswith(("conv1", "bn1", "maxpool")):
        return 0
    if layer_name.startswith("layer"):
        return int(layer_name[5])
    if layer_name.startswith("global_pool"):
        return 5
    return -1
