"""Building blocks shared by the backbones.

Layer names follow timm's state-dict keys (``stages.0.blocks.1.conv_dw``) so that the converter
in :mod:`zoobot_tf.pretrained` maps Zoobot v2 weights one to one, and so that finetuning can find
a backbone's stages by name.
"""
from __future__ import annotations

import keras
from keras import layers, ops

# PyTorch BatchNorm momentum 0.1 == Keras momentum 0.9; timm's eps is 1e-5 (Keras' default is 1e-3).
TORCH_BN = dict(momentum=0.9, epsilon=1e-5)


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
    pad = "same"
    if kernel_size == 1:
        pad = "valid"
    elif strides > 1 and padding == "torch":
        p = ((strides - 1) + (kernel_size - 1)) // 2
        x = layers.ZeroPadding2D(p, name=f"{name}.pad")(x)
        pad = "valid"
    if depthwise:
        return layers.DepthwiseConv2D(kernel_size, strides=strides, padding=pad, use_bias=use_bias, name=name)(x)
    return layers.Conv2D(filters, kernel_size, strides=strides, padding=pad, use_bias=use_bias, name=name)(x)


def batch_norm(x, name: str, eps: float = 1e-5, activation: str | None = None):
    x = layers.BatchNormalization(momentum=0.9, epsilon=eps, name=name)(x)
    if activation:
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
