"""EfficientNet (Tan & Le 2019) and EfficientNetV2 (2021), built from timm-style block strings.

One generator builds every variant from an architecture definition such as
``"ir_r2_k3_s2_e6_c24_se0.25"`` (block type, repeats, kernel, stride, expansion, channels, SE ratio),
with timm's layer names, channel rounding and SE sizing, so converted timm weights fit one to one.

``padding='torch'`` pads stride-2 convolutions symmetrically (timm's ``efficientnet_b0``);
``padding='tf'`` uses TensorFlow 'same' (timm's ``tf_*`` ports, e.g. ``tf_efficientnetv2_s``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import keras
from keras import layers

from zoobot_tf.models.backbones.common import DropPath, batch_norm, conv2d
from zoobot_tf.ops.layers import ChannelScale, GlobalAveragePooling2D

B_ARCH = [
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e6_c24_se0.25",
    "ir_r2_k5_s2_e6_c40_se0.25",
    "ir_r3_k3_s2_e6_c80_se0.25",
    "ir_r3_k5_s1_e6_c112_se0.25",
    "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320_se0.25",
]
V2_B0_ARCH = [
    "cn_r1_k3_s1_e1_c16_skip",
    "er_r2_k3_s2_e4_c32",
    "er_r2_k3_s2_e4_c48",
    "ir_r3_k3_s2_e4_c96_se0.25",
    "ir_r5_k3_s1_e6_c112_se0.25",
    "ir_r8_k3_s2_e6_c192_se0.25",
]
V2_S_ARCH = [
    "cn_r2_k3_s1_e1_c24_skip",
    "er_r4_k3_s2_e4_c48",
    "er_r4_k3_s2_e4_c64",
    "ir_r6_k3_s2_e4_c128_se0.25",
    "ir_r9_k3_s1_e6_c160_se0.25",
    "ir_r15_k3_s2_e6_c256_se0.25",
]

# name: arch, channel multiplier, depth multiplier, stem channels, padding, BatchNorm eps
VARIANTS = {
    "efficientnet_b0": (B_ARCH, 1.0, 1.0, 32, "torch", 1e-5),
    "efficientnet_b1": (B_ARCH, 1.0, 1.1, 32, "torch", 1e-5),
    "efficientnet_b2": (B_ARCH, 1.1, 1.2, 32, "torch", 1e-5),
    "efficientnet_b3": (B_ARCH, 1.2, 1.4, 32, "torch", 1e-5),
    "efficientnet_b4": (B_ARCH, 1.4, 1.8, 32, "torch", 1e-5),
    "efficientnetv2_b0": (V2_B0_ARCH, 1.0, 1.0, 32, "tf", 1e-3),
    "efficientnetv2_s": (V2_S_ARCH, 1.0, 1.0, 24, "tf", 1e-3),
}


@dataclass
class BlockArgs:
    kind: str  # ds | ir | er | cn
    repeats: int
    kernel: int
    stride: int
    expansion: float
    channels: int
    se_ratio: float = 0.0
    skip: bool | None = None  # cn blocks: residual only with the "_skip" flag


_TOKEN = re.compile(r"^([a-z]+)([\d.]+)$")


def parse_block(spec: str) -> BlockArgs:
    """Parse one timm-style block string, e.g. ``'ir_r2_k3_s2_e6_c24_se0.25'``."""
    kind, *tokens = spec.split("_")
    if kind not in ("ds", "ir", "er", "cn"):
        raise ValueError(f"Unknown block type {kind!r} in {spec!r}; expected ds, ir, er or cn.")
    vals: dict[str, float] = {}
    skip = None
    for t in tokens:
        if t == "skip":
            skip = True
            continue
        if t == "noskip":
            skip = False
            continue
        m = _TOKEN.match(t)
        if not m:
            raise ValueError(f"Cannot parse token {t!r} in block string {spec!r}")
        vals[m.group(1)] = float(m.group(2))
    return BlockArgs(kind, int(vals["r"]), int(vals["k"]), int(vals["s"]), vals.get("e", 1.0), int(vals["c"]),
                     vals.get("se", 0.0), skip)


def make_divisible(v: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return int(new_v)


def round_channels(channels: float, multiplier: float = 1.0) -> int:
    return make_divisible(channels * multiplier) if multiplier != 1.0 else int(channels)


def _squeeze_excite(x, mid: int, rd: int, prefix: str, act: str):
    s = GlobalAveragePooling2D(keepdims=True, name=f"{prefix}.se.pool")(x)
    s = layers.Conv2D(rd, 1, use_bias=True, name=f"{prefix}.se.conv_reduce")(s)
    s = layers.Activation(act, name=f"{prefix}.se.act")(s)
    s = layers.Conv2D(mid, 1, use_bias=True, name=f"{prefix}.se.conv_expand")(s)
    s = layers.Activation("sigmoid", name=f"{prefix}.se.gate")(s)
    return ChannelScale(name=f"{prefix}.se.mul")([x, s])


def _block(x, b: BlockArgs, in_ch: int, out_ch: int, stride: int, prefix: str, pad: str, eps: float,
           act: str, drop_path: float):
    shortcut = x
    if b.kind == "ds":
        x = conv2d(x, in_ch, b.kernel, stride, name=f"{prefix}.conv_dw", padding=pad, depthwise=True)
        x = batch_norm(x, f"{prefix}.bn1", eps, act)
        if b.se_ratio:
            x = _squeeze_excite(x, in_ch, round(in_ch * b.se_ratio), prefix, act)
        x = conv2d(x, out_ch, 1, 1, name=f"{prefix}.conv_pw")
        x = batch_norm(x, f"{prefix}.bn2", eps)
        has_skip = stride == 1 and in_ch == out_ch and b.skip is not False
    elif b.kind == "ir":
        mid = make_divisible(in_ch * b.expansion)
        x = conv2d(x, mid, 1, 1, name=f"{prefix}.conv_pw")
        x = batch_norm(x, f"{prefix}.bn1", eps, act)
        x = conv2d(x, mid, b.kernel, stride, name=f"{prefix}.conv_dw", padding=pad, depthwise=True)
        x = batch_norm(x, f"{prefix}.bn2", eps, act)
        if b.se_ratio:  # timm sizes the squeeze from the block's input channels
            x = _squeeze_excite(x, mid, round(mid * b.se_ratio / b.expansion), prefix, act)
        x = conv2d(x, out_ch, 1, 1, name=f"{prefix}.conv_pwl")
        x = batch_norm(x, f"{prefix}.bn3", eps)
        has_skip = stride == 1 and in_ch == out_ch and b.skip is not False
    elif b.kind == "er":
        mid = make_divisible(in_ch * b.expansion)
        x = conv2d(x, mid, b.kernel, stride, name=f"{prefix}.conv_exp", padding=pad)
        x = batch_norm(x, f"{prefix}.bn1", eps, act)
        if b.se_ratio:
            x = _squeeze_excite(x, mid, round(mid * b.se_ratio / b.expansion), prefix, act)
        x = conv2d(x, out_ch, 1, 1, name=f"{prefix}.conv_pwl")
        x = batch_norm(x, f"{prefix}.bn2", eps)
        has_skip = stride == 1 and in_ch == out_ch and b.skip is not False
    else:  # cn
        x = conv2d(x, out_ch, b.kernel, stride, name=f"{prefix}.conv", padding=pad)
        x = batch_norm(x, f"{prefix}.bn1", eps, act)
        has_skip = bool(b.skip) and stride == 1 and in_ch == out_ch
    if has_skip:
        if drop_path > 0:
            x = DropPath(drop_path, name=f"{prefix}.drop_path")(x)
        x = layers.Add(name=f"{prefix}.add")([x, shortcut])
    return x


def build_efficientnet(
    input_shape: Sequence[int],
    arch: Sequence[str] = tuple(B_ARCH),
    channel_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    stem_channels: int = 32,
    num_features: int = 1280,
    padding: str = "torch",
    bn_eps: float = 1e-5,
    activation: str = "silu",
    drop_path_rate: float = 0.0,
    name: str = "encoder",
) -> keras.Model:
    """EfficientNet encoder: (H, W, C) in [0, 1] -> (num_features,) pooled features."""
    blocks = [parse_block(s) for s in arch]
    repeats = [int(math.ceil(b.repeats * depth_multiplier)) for b in blocks]
    total = sum(repeats)
    inputs = keras.Input(shape=tuple(input_shape), name="pixels")
    stem = round_channels(stem_channels, channel_multiplier)
    x = conv2d(inputs, stem, 3, 2, name="conv_stem", padding=padding)
    x = batch_norm(x, "bn1", bn_eps, activation)
    in_ch, k = stem, 0
    for si, (b, n) in enumerate(zip(blocks, repeats)):
        out_ch = round_channels(b.channels, channel_multiplier)
        for j in range(n):
            stride = b.stride if j == 0 else 1
            rate = drop_path_rate * k / total
            x = _block(x, b, in_ch, out_ch, stride, f"blocks.{si}.{j}", padding, bn_eps, activation, rate)
            in_ch, k = out_ch, k + 1
    x = conv2d(x, round_channels(num_features, channel_multiplier), 1, 1, name="conv_head")
    x = batch_norm(x, "bn2", bn_eps, activation)
    x = GlobalAveragePooling2D(name="global_pool")(x)
    return keras.Model(inputs, x, name=name)


def stage_of(layer_name: str) -> int:
    if layer_name.startswith(("conv_stem", "bn1")):
        return 0
    if layer_name.startswith("blocks."):
        return int(layer_name.split(".")[1]) + 1
    if layer_name.startswith(("conv_head", "bn2", "global_pool")):
        return 99
    return -1
