"""ConvNeXt (Liu et al. 2022) with timm's exact structure, built for speed on CPU.

The 7x7 depthwise convolutions are ``DepthwiseConv2D``: keras.applications builds them as
``Conv2D(groups=C)``, which is ~80x slower on CPU (REFERENCE section 6). The pointwise MLP is
:class:`~zoobot_tf.ops.layers.Pointwise` (a Dense over channels; timm's ``conv_mlp`` variants hold the
same numbers as 1x1 convs).
As in timm, the pooled features pass through a final LayerNorm (``head.norm``).
Under ``mixed_bfloat16`` only the stem, downsampling convolutions and the MLPs compute in bfloat16;
depthwise convolutions and the residual stream stay float32 (see ``float32_under_bfloat16``). Every
LayerNorm computes in float32; those before a bfloat16 layer (each block's, each downsampling's) take the
mixed policy, so they hand their output over in bfloat16 from the same kernel instead of a float32 tensor
that a Cast then rounds (and a Cast of its gradient back).
"""
from __future__ import annotations

from typing import Sequence

import keras
from keras import layers

from zoobot_tf.models.backbones.common import (
    DropPath,
    drop_path_rates,
    float32_under_bfloat16,
)
from zoobot_tf.ops.layers import DepthwiseConv2D, GlobalAveragePooling2D, LayerNormalization, Pointwise

# name: depths, dims, conv_mlp (as timm defines them; conv_mlp only changes the weight layout)
VARIANTS = {
    "convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320), True),
    "convnext_femto": ((2, 2, 6, 2), (48, 96, 192, 384), True),
    "convnext_pico": ((2, 2, 6, 2), (64, 128, 256, 512), True),
    "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640), True),
    "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768), False),
    "convnext_small": ((3, 3, 27, 3), (96, 192, 384, 768), False),
    "convnext_base": ((3, 3, 27, 3), (128, 256, 512, 1024), False),
    "convnext_large": ((3, 3, 27, 3), (192, 384, 768, 1536), False),
}

LN_EPS = 1e-6


def convnext_block(x, dim: int, prefix: str, ls_init_value: float = 1e-6, drop_path: float = 0.0):
    shortcut = x
    f32 = float32_under_bfloat16()  # only the MLP's MatMuls run in bfloat16 under mixed_bfloat16
    x = DepthwiseConv2D(7, padding="same", use_bias=True, name=f"{prefix}.conv_dw", **f32)(x)
    x = LayerNormalization(epsilon=LN_EPS, name=f"{prefix}.norm")(x)  # float32 in, the MLP's dtype out
    # exact (erf) GELU, as torch.nn.GELU, fused into fc1's MatMul on CPU (see common.Pointwise)
    x = Pointwise(4 * dim, activation="gelu", name=f"{prefix}.mlp.fc1")(x)
    # timm's LayerScale (``{prefix}.gamma``) folded into fc2's weights (see common.Pointwise)
    scale = ls_init_value if ls_init_value is not None and ls_init_value > 0 else None
    x = Pointwise(dim, layer_scale=scale, layer_scale_name=f"{prefix}.gamma" if scale else None,
                  name=f"{prefix}.mlp.fc2")(x)
    if drop_path > 0:
        x = DropPath(drop_path, name=f"{prefix}.drop_path", **f32)(x)
    return layers.Add(name=f"{prefix}.add", **f32)([shortcut, x])  # the residual stream stays float32


def build_convnext(
    input_shape: Sequence[int],
    depths: Sequence[int] = (3, 3, 9, 3),
    dims: Sequence[int] = (96, 192, 384, 768),
    conv_mlp: bool = False,
    ls_init_value: float = 1e-6,
    drop_path_rate: float = 0.0,
    name: str = "encoder",
) -> keras.Model:
    """ConvNeXt encoder: (H, W, C) images scaled to [0, 1] -> (dims[-1],) pooled, normalised features.

    ``conv_mlp`` is accepted for config compatibility with timm; the computation is identical.
    """
    if len(depths) != len(dims):
        raise ValueError(f"depths and dims must have the same length. Received: depths={depths}, dims={dims}")
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    f32 = float32_under_bfloat16()
    x = layers.Conv2D(dims[0], 4, strides=4, padding="valid", name="stem.0")(inputs)
    x = LayerNormalization(epsilon=LN_EPS, name="stem.1", **f32)(x)
    rates = drop_path_rates(depths, drop_path_rate)
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        if i > 0:
            x = LayerNormalization(epsilon=LN_EPS, name=f"stages.{i}.downsample.0")(x)
            x = layers.Conv2D(dim, 2, strides=2, padding="valid", name=f"stages.{i}.downsample.1")(x)
        for j in range(depth):
            x = convnext_block(x, dim, f"stages.{i}.blocks.{j}", ls_init_value, rates[i][j])
    x = GlobalAveragePooling2D(name="head.global_pool", **f32)(x)
    x = LayerNormalization(epsilon=LN_EPS, name="head.norm", **f32)(x)
    return keras.Model(inputs, x, name=name)


def stage_of(layer_name: str) -> int:
    """0 for the stem, i + 1 for stage i, 5 for the head (used to group layers for finetuning)."""
    if layer_name.startswith("stem"):
        return 0
    if layer_name.startswith("stages."):
        return int(layer_name.split(".")[1]) + 1
    if layer_name.startswith("head"):
        return 5
    return -1
