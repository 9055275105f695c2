"""Building blocks shared by the backbones.

Layer names follow timm's state-dict keys (``stages.0.blocks.1.conv_dw``) so that the converter
in :mod:`zoobot_tf.pretrained` maps Zoobot v2 weights one to one, and so that finetuning can find
a backbone's stages by name.
"""
from __future__ import annotations

import math
import weakref

import keras
import tensorflow as tf
from keras import layers, ops

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


@keras.saving.register_keras_serializable(package="zoobot_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization through TensorFlow's fused kernel (``FusedBatchNormV3``) for NHWC images.

    Keras 3's BatchNormalization is unfused: moments, normalisation and moving-average updates are a
    dozen ops forward and more backward. The fused kernel (oneDNN on CPU, cuDNN on GPU) is one op each
    way: fewer graph ops to trace and fewer passes over memory (see benchmarks/throughput.py). Weights
    and config are those of ``keras.layers.BatchNormalization``. As in PyTorch and Keras 2, the moving
    variance is updated with the unbiased batch variance (a factor n/(n-1), n = batch x height x width).
    Other layouts, masks, renorm and synchronized BN fall back to the Keras implementation.
    """

    def _fused_ok(self, inputs, mask) -> bool:
        return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3))

    _folded_into = None  # the convolution this layer's inference transform is folded into, if any

    def folded(self, training) -> bool:
        """True when this layer is an identity because its convolution applies it (inference only)."""
        return (self._folded_into is not None and self._folded_into() is not None
                and not (training and self.trainable))

    def call(self, inputs, training=None, mask=None):
        if self.folded(training):
            return tf.cast(inputs, self.compute_dtype)
        if not self._fused_ok(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.constant([], tf.float32), variance=tf.constant([], tf.float32),
                epsilon=self.epsilon, data_format="NHWC", is_training=True)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return tf.cast(y, self.compute_dtype)


class _FoldsBatchNorm:
    """Mixin for convolutions: PyTorch-style symmetric padding inside the op (``explicit_padding``), and
    at inference the following batch norm applied through the kernel and bias.

    A batch norm with moving statistics is a per-channel affine map, so conv -> BN equals one conv with
    kernel ``W * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``. Computing that on
    the weights (a few small ops per call) removes a pass over the activations and lets TensorFlow's
    graph optimiser fuse the activation that follows into the convolution (oneDNN post-ops). Weights,
    checkpoints and training are unchanged: in training with a trainable batch norm (batch statistics)
    nothing is folded. :func:`fold_batch_norms` links the pairs of a built model.
    """

    _folded_bn = None

    def __init__(self, *args, explicit_padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.explicit_padding = int(explicit_padding)
        if self.explicit_padding and (self.padding != "valid" or self.data_format != "channels_last"):
            raise ValueError("explicit_padding needs padding='valid' and channels_last. "
                             f"Received: padding={self.padding!r}, data_format={self.data_format!r}")

    def fold_batch_norm(self, bn: "FusedBatchNormalization") -> None:
        # weak references, set past Keras' attribute tracking: the layers stay each other's strangers to
        # saving, weight lists and the functional graph
        object.__setattr__(self, "_folded_bn", weakref.ref(bn))
        object.__setattr__(bn, "_folded_into", weakref.ref(self))

    def _folded_kernel_and_bias(self, bn):
        scale = tf.math.rsqrt(tf.cast(bn.moving_variance, tf.float32) + bn.epsilon)
        if bn.scale:
            scale = scale * tf.cast(bn.gamma, tf.float32)
        bias = -tf.cast(bn.moving_mean, tf.float32)
        if self.use_bias:
            bias = bias + tf.cast(self.bias, tf.float32)
        bias = bias * scale
        if bn.center:
            bias = bias + tf.cast(bn.beta, tf.float32)
        kernel = tf.cast(self.kernel, tf.float32)
        if isinstance(self, layers.DepthwiseConv2D):  # (kh, kw, C, m): output channel c * m + j
            scale = tf.reshape(scale, [kernel.shape[2], kernel.shape[3]])
        return kernel * scale, bias

    def call(self, inputs, training=None):
        bn = self._folded_bn() if self._folded_bn is not None else None
        fold = bn is not None and bn.folded(training)
        if not fold and not self.explicit_padding:
            return super().call(inputs)
        if fold:
            kernel, bias = self._folded_kernel_and_bias(bn)
        else:
            kernel, bias = self.kernel, self.bias if self.use_bias else None
        kernel = tf.cast(kernel, self.compute_dtype)
        p = self.explicit_padding
        padding = [[0, 0], [p, p], [p, p], [0, 0]] if p else self.padding.upper()
        strides = [1, *self.strides, 1]
        if isinstance(self, layers.DepthwiseConv2D):
            if p:  # TF 2.21 aborts on a depthwise conv with explicit padding fused with a bias ("Check failed:
                # Invalid index from the dimension: 1, 0, H"): pad first, as ZeroPadding2D would
                inputs, padding = tf.pad(inputs, padding), "VALID"
            x = tf.nn.depthwise_conv2d(inputs, kernel, strides, padding, dilations=self.dilation_rate)
        else:
            x = tf.nn.conv2d(inputs, kernel, strides, padding, dilations=self.dilation_rate)
        if bias is not None:
            x = tf.nn.bias_add(x, tf.cast(bias, self.compute_dtype))
        return self.activation(x)

    def compute_output_shape(self, input_shape):
        p = 2 * self.explicit_padding
        if p:
            input_shape = (input_shape[0], *(None if d is None else d + p for d in input_shape[1:3]), input_shape[3])
        return super().compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "explicit_padding": self.explicit_padding}


@keras.saving.register_keras_serializable(package="zoobot_tf")
class Conv2D(_FoldsBatchNorm, layers.Conv2D):
    """``keras.layers.Conv2D`` with symmetric ``explicit_padding`` inside the op (no separate Pad) and a
    following batch norm applied through its weights at inference (see _FoldsBatchNorm)."""


@keras.saving.register_keras_serializable(package="zoobot_tf")
class DepthwiseConv2D(_FoldsBatchNorm, layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with ``explicit_padding`` and batch-norm folding, as Conv2D."""


def fold_batch_norms(model: keras.Model) -> int:
    """Link every conv -> FusedBatchNormalization pair of a functional model where the batch norm is
    the convolution's only consumer, so inference runs them as one convolution. Returns the number linked."""
    n = 0
    for layer in model.layers:
        if not isinstance(layer, FusedBatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        conv = parents[0].operation
        if (isinstance(conv, _FoldsBatchNorm) and len(conv._inbound_nodes) == 1
                and len(conv._outbound_nodes) == 1 and conv.data_format == "channels_last"):
            conv.fold_batch_norm(layer)
            n += 1
    return n


@keras.saving.register_keras_serializable(package="zoobot_tf")
class SiLU(layers.Layer):
    """SiLU / swish, x * sigmoid(x). At inference it is written as Sigmoid and Mul, the pattern TensorFlow's
    graph optimiser fuses into a preceding convolution + bias on CPU; in training, ``tf.nn.silu`` (whose
    gradient keeps less memory)."""

    def call(self, x, training=None):
        return tf.nn.silu(x) if training else x * tf.sigmoid(x)


@keras.saving.register_keras_serializable(package="zoobot_tf")
class GlobalAveragePooling2D(layers.GlobalAveragePooling2D):
    """``keras.layers.GlobalAveragePooling2D`` as one average pool over the whole (static) image: oneDNN's
    pooling kernel, 1.4-1.7x faster than the Mean reduction on CPU (EfficientNet pools in every
    squeeze-excite block). Same numbers to float rounding; other layouts fall back to Keras."""

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if self.data_format != "channels_last" or h is None or w is None or len(inputs.shape) != 4:
            return super().call(inputs)
        x = tf.nn.avg_pool2d(inputs, (h, w), 1, "VALID")
        return x if self.keepdims else tf.reshape(x, [-1, inputs.shape[-1]])


def _on_cpu_only() -> bool:
    return not tf.config.list_logical_devices("GPU")


@tf.function(jit_compile=True, autograph=False)
def _gelu_forward(x):
    xf = tf.cast(x, tf.float32)  # bfloat16 activations are computed in float32 inside the fused kernel
    return tf.cast(0.5 * xf * tf.math.erfc(xf * (-1.0 / math.sqrt(2.0))), x.dtype)  # erfc: exact for x << 0


@tf.function(jit_compile=True, autograph=False)
def _gelu_backward(x, dy):
    xf = tf.cast(x, tf.float32)
    cdf = 0.5 * tf.math.erfc(xf * (-1.0 / math.sqrt(2.0)))
    pdf = tf.exp(-0.5 * tf.square(xf)) * (1.0 / math.sqrt(2.0 * math.pi))
    return tf.cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), dy.dtype)


@tf.custom_gradient
def fused_gelu(x):
    """Exact (erf) GELU whose forward and backward passes are each one XLA-fused elementwise kernel.

    TensorFlow differentiates ``tf.nn.gelu`` into a dozen elementwise ops, each a full pass over
    ConvNeXt's widest activations; fused, the backward pass reads x and dy once (240 -> 100 ms on a
    32x56x56x384 tensor on this CPU). Same numbers as ``tf.nn.gelu(x, approximate=False)`` to float rounding.
    """
    def grad(dy):
        return _gelu_backward(x, dy)

    return _gelu_forward(x), grad


@keras.saving.register_keras_serializable(package="zoobot_tf")
class Pointwise(layers.Dense):
    """A Dense layer over the channels of an NHWC tensor, computed as one 2-D MatMul + BiasAdd (+ GELU).

    Keras' Dense on a 4-D input becomes a BatchMatMul, which TensorFlow's graph optimiser cannot fuse.
    Flattened to (positions, channels), MatMul + BiasAdd + exact GELU is rewritten into one oneDNN kernel
    with the activation as a post-op: ConvNeXt's MLP forward pass runs 1.8x faster on CPU (109 vs 200 ms
    for a 32x56x56x96 block). In training on CPU the GELU is :func:`fused_gelu` instead (the post-op
    does not apply when the pre-activation is kept for the backward pass). Same weights (kernel, bias)
    and numbers as Dense + Activation("gelu").

    ``layer_scale`` (ConvNeXt's per-channel ``gamma``, initial value) scales the outputs as
    :class:`LayerScale` does, but is folded into the kernel and bias (``x @ (W g) + b g``): a few ops on
    the weights instead of a multiply over the whole activation forward and two more backward.
    ``layer_scale_name`` is the timm key of ``gamma`` (for :mod:`zoobot_tf.pretrained`).
    """

    def __init__(self, units, layer_scale: float | None = None, layer_scale_name: str | None = None, **kwargs):
        super().__init__(units, **kwargs)
        if layer_scale is not None and self.activation is not keras.activations.linear:
            raise ValueError("layer_scale scales the outputs after the activation and can only be folded into "
                             f"the weights of a linear Pointwise. Received: activation={self.activation}")
        self.layer_scale = None if layer_scale is None else float(layer_scale)
        self.layer_scale_name = layer_scale_name

    def build(self, input_shape):
        super().build(input_shape)
        if self.layer_scale is not None:
            self.gamma = self.add_weight(name="gamma", shape=(self.units,), trainable=True,
                                         initializer=keras.initializers.Constant(self.layer_scale))

    def call(self, inputs, training=None):
        shape = tf.shape(inputs)
        x = tf.reshape(inputs, [-1, inputs.shape[-1]])
        kernel, bias = self.kernel, self.bias if self.use_bias else None
        if self.layer_scale is not None:
            kernel = kernel * self.gamma
            bias = None if bias is None else bias * self.gamma
        x = tf.matmul(x, tf.cast(kernel, x.dtype))
        if bias is not None:
            x = tf.nn.bias_add(x, tf.cast(bias, x.dtype))
        if self.activation is keras.activations.gelu:
            x = fused_gelu(x) if training and _on_cpu_only() else tf.nn.gelu(x, approximate=False)
        elif self.activation is not keras.activations.linear:
            x = self.activation(x)
        return tf.reshape(x, tf.concat([shape[:-1], [self.units]], axis=0))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "layer_scale": self.layer_scale, "layer_scale_name": self.layer_scale_name}

    # Dense's own (de)serialisation knows only kernel and bias (for its quantisation modes, unused here);
    # the base Layer's stores every variable in order: kernel, bias[, gamma].
    def save_own_variables(self, store):
        layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        layers.Layer.load_own_variables(self, store)


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
