"""Building blocks shared by the backbones (architecture only).

Layer names follow timm's state-dict keys (``stages.0.blocks.1.conv_dw``) so that the converter
in :mod:`zoobot_tf.pretrained` maps Zoobot v2 weights one to one, and so that finetuning can find
a backbone's stages by name. The layers with a CPU fast path (fused batch norm, folding convolutions,
the pointwise MLP...) come from :mod:`zoobot_tf.ops.layers`; this module only composes them.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from zoobot_tf.ops.layers import Conv2D, DepthwiseConv2D, FusedBatchNormalization, SiLU

# PyTorch BatchNorm momentum 0.1 == Keras momentum 0.9; timm's eps is 1e-5 (Keras' default is 1e-3).
TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


def float32_under_bfloat16() -> dict:
    """Layer kwargs that keep a memory-bound layer in float32 when building under ``mixed_bfloat16``.

    bfloat16 pays where oneDNN runs matrix products on the CPU's AMX units (2.6-3x the float32 MatMul
    here); the depthwise-convolution gradients and normalisations have no such kernels and run slower
    in bfloat16 than in float32, besides losing precision. ConvNeXt-T training on this machine (A/B runs
    of one step, batch 32, 224 px): float32 3.9 img/s, everything in bfloat16 4.1, with these layers in
    float32 5.6-6.2 (depthwise convs in bfloat16 instead: 5.1). Under any other policy the layer
    follows the policy as usual.
    """
    return {"dtype": "float32"} if keras.config.dtype_policy().name == "mixed_bfloat16" else {}


@keras.saving.register_keras_serializable(package="zoobot_tf")
class LayerScale(layers.Layer):
    """Per-channel learnable scale (ConvNeXt's ``gamma``), initialised to a small value."""

    def __init__(self, init_value: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma", shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value), trainable=True)

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def get_config(self):
        return {**super().get_config(), "init_value": self.init_value}


@keras.saving.register_keras_serializable(package="zoobot_tf")
class DropPath(layers.Layer):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``rate`` in training."""

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def conv2d(x, filters: int, kernel_size: int, strides: int = 1, name: str = "", use_bias: bool = False,
           padding: str = "torch", depthwise: bool = False):
    """Conv (or depthwise conv) with PyTorch's symmetric padding ``k // 2`` (``padding='torch'``) or
    TensorFlow's 'same' (``padding='tf'``, bottom/right-heavy for stride 2). They differ only for
    stride > 1; timm models need 'torch' to reproduce their outputs exactly."""
    if padding not in ("torch", "tf"):
        raise ValueError(f"padding must be 'torch' or 'tf'. Received: padding={padding!r}")
    pad, explicit = "same", 0
    if kernel_size == 1:
        pad = "valid"
    elif strides > 1 and padding == "torch":  # padded inside the convolution op: no separate Pad pass
        pad, explicit = "valid", ((strides - 1) + (kernel_size - 1)) // 2
    if depthwise:
        return DepthwiseConv2D(kernel_size, strides=strides, padding=pad, use_bias=use_bias,
                               explicit_padding=explicit, name=name)(x)
    return Conv2D(filters, kernel_size, strides=strides, padding=pad, use_bias=use_bias,
                  explicit_padding=explicit, name=name)(x)


def batch_norm(x, name: str, eps: float = 1e-5, activation: str | None = None):
    """FusedBatchNormalization (+ activation); after :func:`conv2d`, folded into it at inference once the
    model is passed to :func:`fold_batch_norms` (``build_backbone`` does)."""
    x = FusedBatchNormalization(momentum=0.9, epsilon=eps, name=name)(x)
    if activation in ("silu", "swish"):
        x = SiLU(name=f"{name}.act")(x)
    elif activation:
        x = layers.Activation(activation, name=f"{name}.act")(x)
    return x


def drop_path_rates(depths, drop_path_rate: float) -> list[list[float]]:
    """Linearly increasing stochastic-depth rates over all blocks (as timm), split per stage."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, k = [], 0
    for d in depths:
        out.append(rates[k:k + d])
        k += d
    return out
