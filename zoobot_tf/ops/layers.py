"""Layers with a measured fast path on CPU and a stock Keras fallback (:func:`zoobot_tf.ops.fast`).

Each class is a drop-in for a Keras layer: same weights, same config (plus a few options of its own),
same numbers to float rounding. Architecture files (:mod:`zoobot_tf.models.backbones`) build with these
and never need to know which path runs.
"""
from __future__ import annotations

import math
import weakref

import keras
import tensorflow as tf
from keras import layers

from zoobot_tf.ops import fast


def on_cpu_only() -> bool:
    """True when TensorFlow sees no GPU (the fused GELU kernels below are for CPUs)."""
    return not tf.config.list_logical_devices("GPU")


def _xla_cast(y, dtype):
    """``tf.cast(y, dtype)`` inside an XLA kernel; to bfloat16 by rounding the float32 bits (to nearest,
    ties to even, NaN kept NaN): the same numbers as XLA's own conversion, which on this CPU is most of an
    elementwise kernel's time (ConvNeXt's GELU on a 32x56x56x320 bfloat16 tensor, forward 19-22 -> 12 ms,
    backward 27-31 -> 21). Differentiable as a cast (the kernels at inference are differentiated when
    gradients are taken through a model called with ``training=False``)."""
    if tf.as_dtype(dtype) != tf.bfloat16 or y.dtype != tf.float32:
        return tf.cast(y, dtype)
    return _round_to_bfloat16(y)


@tf.custom_gradient
def _round_to_bfloat16(y):
    bits = tf.bitcast(y, tf.uint32)
    lsb = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 16), 1)
    rounded = tf.bitwise.right_shift(bits + (0x7FFF + lsb), 16)
    quiet_nan = tf.bitwise.bitwise_or(tf.bitwise.right_shift(bits, 16), 0x40)
    top = tf.where(tf.math.is_nan(y), quiet_nan, rounded)

    def grad(dy):
        return tf.cast(dy, tf.float32)

    return tf.bitcast(tf.cast(top, tf.uint16), tf.bfloat16), grad


@keras.saving.register_keras_serializable(package="zoobot_tf")
class FusedBatchNormalization(layers.BatchNormalization):
    """BatchNormalization through TensorFlow's fused kernel (``FusedBatchNormV3``) for NHWC images.

    Keras 3's BatchNormalization is unfused: moments, normalisation and moving-average updates are a
    dozen ops forward and more backward. The fused kernel (oneDNN on CPU, cuDNN on GPU) is one op each
    way (EfficientNetB0 training 11.8 -> 16.1 img/s here). Weights and config are those of
    ``keras.layers.BatchNormalization``. As in PyTorch and Keras 2, the fused path updates the moving
    variance with the unbiased batch variance (a factor n/(n-1), n = batch x height x width); the stock
    path is Keras' own (biased). Other layouts, masks, renorm and synchronized BN always use Keras'.
    """

    _folded_into = None  # the convolution this layer's inference transform is folded into, if any
    _swish_into = None  # the SiLU after this layer, applied here in training (fuse_batch_norm_swish)

    def _fused_ok(self, inputs, mask) -> bool:
        return (fast() and mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                and self.axis in (-1, 3))

    def folded(self, training) -> bool:
        """True when this layer is an identity because its convolution applies it (fast path, inference)."""
        return fast() and _linked(self, "_folded_into") is not None and not (training and self.trainable)

    def applies_swish(self, training) -> bool:
        """True when this layer also applies the SiLU after it, which is then an identity (fast path,
        training with batch statistics, on CPU: cuDNN saves the inverse variance where the CPU kernels
        save the variance; see :func:`fuse_batch_norm_swish`)."""
        return fast() and _linked(self, "_swish_into") is not None and bool(training) and self.trainable \
            and on_cpu_only()

    def call(self, inputs, training=None, mask=None):
        if self.folded(training):
            return tf.cast(inputs, self.compute_dtype)
        swish = self.applies_swish(training)
        if not self._fused_ok(inputs, mask):
            y = super().call(inputs, training=training, mask=mask)
            return _swish(y) if swish else y
        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) else tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if training and self.trainable:
            # the kernel also updates the moving statistics (exponential_avg_factor = 1 - momentum): 2 graph
            # ops per layer instead of ~12 (EfficientNetB0: ~500 fewer ops to trace and optimise)
            moving = (tf.cast(self.moving_mean, tf.float32), tf.cast(self.moving_variance, tf.float32))
            if swish:
                y, mean, variance = _batch_norm_swish(x, gamma, beta, *moving, self.epsilon, 1.0 - self.momentum)
            else:
                y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=moving[0], variance=moving[1], epsilon=self.epsilon,
                    exponential_avg_factor=1.0 - self.momentum, data_format="NHWC", is_training=True)
            self.moving_mean.assign(mean)
            self.moving_variance.assign(variance)
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return tf.cast(y, self.compute_dtype)


class _FoldsBatchNorm:
    """Mixin for convolutions: PyTorch-style symmetric padding (``explicit_padding``), inside the op on the
    fast path, and at inference the following batch norm applied through the kernel and bias.

    A batch norm with moving statistics is a per-channel affine map, so conv -> BN equals one conv with
    kernel ``W * s`` and bias ``(b - mean) * s + beta``, ``s = gamma / sqrt(var + eps)``. Computing that on
    the weights (a few small ops per call) removes a pass over the activations and lets TensorFlow's
    graph optimiser fuse the activation that follows into the convolution (oneDNN post-ops;
    EfficientNetB0 inference 74 -> 85 img/s here). Weights, checkpoints and training are unchanged: in
    training with a trainable batch norm (batch statistics) nothing is folded. :func:`fold_batch_norms`
    links the pairs of a built model.
    """

    _folded_bn = None
    _scaled_by = None  # the ChannelScale before this 1x1 conv that computes it in training, if any

    def __init__(self, *args, explicit_padding: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.explicit_padding = int(explicit_padding)
        if self.explicit_padding and (self.padding != "valid" or self.data_format != "channels_last"):
            raise ValueError("explicit_padding needs padding='valid' and channels_last. "
                             f"Received: padding={self.padding!r}, data_format={self.data_format!r}")

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

    def _kernel_and_bias(self, training):
        """(kernel, bias or None, folded): the batch norm after this conv folded in when it is an identity."""
        bn = _linked(self, "_folded_bn")
        if bn is not None and bn.folded(training):
            return (*self._folded_kernel_and_bias(bn), True)
        return self.kernel, self.bias if self.use_bias else None, False

    def computed_by_scale(self, training) -> bool:
        """True when this 1x1 conv is an identity because the ChannelScale before it computes it (fast path,
        training; see :func:`fuse_channel_scale`)."""
        scale = _linked(self, "_scaled_by")
        return fast() and bool(training) and scale is not None and _linked(scale, "_projected_by") is self

    def scaled_projection(self, x, scale, training):
        """This 1x1 conv of ``x * scale`` (x: (B, H, W, C), scale: (B, 1, 1, C)) as one batched MatMul of x
        with a kernel per image, ``scale[b] * W`` (B, C, O): x * scale is never formed, so neither it nor its
        gradient (dy * scale, and the sum of dy * x over the image for the scale) is a pass over the
        activations; the scale's and the kernel's gradients come from the per-image kernel's, (B, C, O)."""
        kernel, bias, _ = self._kernel_and_bias(training)
        kernel = tf.cast(kernel, tf.float32)[0, 0]  # (C, O)
        per_image = tf.cast(tf.cast(scale, tf.float32)[:, 0, 0, :, None] * kernel, self.compute_dtype)
        x = tf.cast(x, self.compute_dtype)
        shape = tf.shape(x)
        y = tf.linalg.matmul(tf.reshape(x, [shape[0], -1, kernel.shape[0]]), per_image)
        y = tf.reshape(y, [shape[0], shape[1], shape[2], kernel.shape[1]])
        if bias is not None:
            y = tf.nn.bias_add(y, tf.cast(bias, self.compute_dtype))
        return self.activation(y)

    def call(self, inputs, training=None):
        p = self.explicit_padding
        if not fast():
            if p:
                inputs = tf.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]])
            return super().call(inputs)
        if self.computed_by_scale(training):
            return inputs
        kernel, bias, fold = self._kernel_and_bias(training)
        depthwise = isinstance(self, layers.DepthwiseConv2D)
        # TensorFlow's bfloat16 depthwise-convolution gradients are slow on CPUs (EfficientNetB0 trained at 13
        # img/s in mixed_bfloat16 against 20 in float32): in training, the depthwise conv runs in float32
        if depthwise and training and self._large_same_depthwise(inputs):
            x = _depthwise_same(tf.cast(inputs, tf.float32), tf.cast(kernel, tf.float32),
                                None if bias is None else tf.cast(bias, tf.float32))
            return self.activation(tf.cast(x, self.compute_dtype))
        wide = depthwise and bool(training) and self.compute_dtype == "bfloat16"
        if not fold and not p and not wide:
            return super().call(inputs)
        kernel = tf.cast(kernel, tf.float32 if wide else self.compute_dtype)
        padding = [[0, 0], [p, p], [p, p], [0, 0]] if p else self.padding.upper()
        strides = [1, *self.strides, 1]
        if depthwise:
            if p and bias is not None:  # TF 2.21 aborts on a depthwise conv with explicit padding fused with a
                # bias ("Check failed: Invalid index from the dimension: 1, 0, H"). Without a bias (training,
                # the batch norm not folded) the padding stays in the op: no padded copy and no Slice in the
                # gradient (EfficientNetB0's strided depthwise convs: 224 -> 183 ms forward and backward at
                # batch 32). With one, the same numbers come from 'SAME' padding (:func:`_as_same_padding`)
                # or, failing that, from padding first as ZeroPadding2D would
                same = _as_same_padding(kernel, p, self.strides, self.dilation_rate)
                if same is None:
                    inputs, padding = tf.pad(inputs, padding), "VALID"
                else:
                    kernel, padding = same, "SAME"
            x = tf.nn.depthwise_conv2d(tf.cast(inputs, kernel.dtype), kernel, strides, padding,
                                       dilations=self.dilation_rate)
            x = tf.cast(x, self.compute_dtype)
        else:
            x = tf.nn.conv2d(inputs, kernel, strides, padding, dilations=self.dilation_rate)
        if bias is not None:
            x = tf.nn.bias_add(x, tf.cast(bias, self.compute_dtype))
        return self.activation(x)

    def _large_same_depthwise(self, inputs) -> bool:
        """A 5x5 (or larger) stride-1 'same' depthwise conv with one filter per channel, in float32 (or in
        float32 for training under a bfloat16 policy, as above): ConvNeXt's 7x7 and EfficientNet's 5x5, whose
        filter gradient :func:`_depthwise_same` computes faster than oneDNN's kernel (3x3: slower)."""
        return (self.kernel_size[0] >= 5 and self.kernel_size[0] == self.kernel_size[1] and self.kernel_size[0] % 2
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1) and self.padding == "same"
                and not self.explicit_padding and self.depth_multiplier == 1 and self.data_format == "channels_last"
                and self.compute_dtype in ("float32", "bfloat16") and inputs.dtype in (tf.float32, tf.bfloat16)
                and on_cpu_only() and None not in inputs.shape[1:])

    def compute_output_shape(self, input_shape):
        p = 2 * self.explicit_padding
        if p:
            input_shape = (input_shape[0], *(None if d is None else d + p for d in input_shape[1:3]), input_shape[3])
        return super().compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "explicit_padding": self.explicit_padding}


def _as_same_padding(kernel, p: int, strides, dilation_rate):
    """A kernel whose 'SAME' convolution equals ``kernel``'s with symmetric zero padding ``p``, or None.

    For an odd k x k kernel with p = k // 2: at stride 1 'SAME' pads p on each side, the same thing. At
    stride 2 'SAME' pads (k - 1) / 2 = p before and one more row and column after than the symmetric
    padding reaches, for even and odd sizes alike; a (k + 1) x (k + 1) kernel whose last row and column are
    zero reads exactly the symmetric windows. EfficientNetB0's strided depthwise convs at inference, batch
    32: no padded copy of the input (152 MB at 112 px), 1.4-1.8x faster here, identical outputs."""
    k = kernel.shape[0]
    if (kernel.shape[1] != k or k % 2 == 0 or p != k // 2 or tuple(dilation_rate) != (1, 1)
            or strides[0] != strides[1] or strides[0] not in (1, 2)):
        return None
    return kernel if strides[0] == 1 else tf.pad(kernel, [[0, 1], [0, 1], [0, 0], [0, 0]])


def _depthwise_same(x, kernel, bias=None):
    """A stride-1 'same' depthwise conv (odd k x k kernel, one filter per channel) [+ bias] for training on
    CPU. oneDNN computes a 5x5 or 7x7 depthwise filter gradient with a generic kernel (ConvNeXt-Nano: ~330 ms
    of a 1.46 s mixed_bfloat16 step); here it is, image by image, a forward depthwise conv of the image
    (padded inside the op) with its dy as the (H, W, C) filter, summed over the batch in a loop: 1.6-2.7x
    faster than putting the batch and channels side by side in one convolution, which needs a transposed
    copy of x and of dy (ConvNeXt-Nano's stages at batch 32), 2-2.5x faster than oneDNN's kernel for
    EfficientNetB0's 5x5 layers, and a loop of a few ops whatever the batch. The bias gradient is a MatMul
    column sum (:func:`_bias_gradient`), not BiasAddGrad."""
    k = kernel.shape[0]

    @tf.custom_gradient
    def run(x, kernel, *bias):
        def grad(dy):
            _, h, w, c = x.shape
            dx = tf.raw_ops.DepthwiseConv2dNativeBackpropInput(
                input_sizes=tf.shape(x), filter=kernel, out_backprop=dy, strides=[1, 1, 1, 1], padding="SAME")
            p = k // 2

            def add_image(b, total):  # (1, k, k, C): this image's share of the filter gradient
                return b + 1, total + tf.nn.depthwise_conv2d(x[b][None], tf.reshape(dy[b], [h, w, c, 1]),
                                                             [1, 1, 1, 1], [[0, 0], [p, p], [p, p], [0, 0]])

            batch = tf.shape(x)[0]
            _, dkernel = tf.while_loop(lambda b, _: b < batch, add_image, (0, tf.zeros([1, k, k, c], x.dtype)),
                                       parallel_iterations=2)
            return (dx, tf.reshape(dkernel, [k, k, c, 1]),
                    *[_bias_gradient(tf.reshape(dy, [-1, c]), b.dtype) for b in bias])

        y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME")
        return (tf.nn.bias_add(y, bias[0]) if bias else y), grad

    return run(x, kernel, *([] if bias is None else [bias]))


@keras.saving.register_keras_serializable(package="zoobot_tf")
class Conv2D(_FoldsBatchNorm, layers.Conv2D):
    """``keras.layers.Conv2D`` with symmetric ``explicit_padding`` and a following batch norm applied
    through its weights at inference on the fast path (see _FoldsBatchNorm)."""


@keras.saving.register_keras_serializable(package="zoobot_tf")
class DepthwiseConv2D(_FoldsBatchNorm, layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with ``explicit_padding`` and batch-norm folding, as Conv2D; in
    training on the fast path a 5x5 (or larger) stride-1 'same' one computes its filter gradient image by image
    (:func:`_depthwise_same`)."""


@keras.saving.register_keras_serializable(package="zoobot_tf")
class ChannelScale(layers.Multiply):
    """``keras.layers.Multiply`` of images (B, H, W, C) by a scale per image and channel (B, 1, 1, C), as
    squeeze-excite's gate. In training on the fast path, when linked to the 1x1 conv that is its only
    consumer (:func:`fuse_channel_scale`), it computes that conv of its product as one batched MatMul
    (:meth:`_FoldsBatchNorm.scaled_projection`) and the conv is an identity. Same weights and config."""

    _projected_by = None  # the 1x1 Conv2D after this layer, computed here in training, if any

    def call(self, inputs, training=None):
        conv = _linked(self, "_projected_by")
        if conv is not None and conv.computed_by_scale(training):
            return conv.scaled_projection(inputs[0], inputs[1], training)
        return super().call(inputs)


def _only_consumer_pairs(model: keras.Model, first: type, second: type):
    """(a, b) for every layer a of type ``first`` in a functional model whose only consumer is a layer b of
    type ``second`` that takes nothing else, each called once, and a's output not a model output. Reads
    Keras' private node lists."""
    outputs = [id(t) for t in model.outputs]
    for b in model.layers:
        if not isinstance(b, second) or len(b._inbound_nodes) != 1:
            continue
        parents = b._inbound_nodes[0].parent_nodes
        if len(parents) != 1:
            continue
        a = parents[0].operation
        if (isinstance(a, first) and len(a._inbound_nodes) == 1 and len(a._outbound_nodes) == 1
                and id(a.output) not in outputs):
            yield a, b


def _link(a, a_attr: str, b, b_attr: str) -> None:
    # weak references, set past Keras' attribute tracking: the layers stay each other's strangers to
    # saving, weight lists and the functional graph
    object.__setattr__(a, a_attr, weakref.ref(b))
    object.__setattr__(b, b_attr, weakref.ref(a))


def _linked(layer, attr: str):
    ref = getattr(layer, attr)
    return None if ref is None else ref()


def fold_batch_norms(model: keras.Model) -> int:
    """Link every conv -> FusedBatchNormalization pair of a functional model where the batch norm is
    the convolution's only consumer, so that inference on the fast path runs them as one convolution.
    Returns the number linked. Nothing changes on the stock path."""
    n = 0
    for conv, bn in _only_consumer_pairs(model, _FoldsBatchNorm, FusedBatchNormalization):
        if conv.data_format == "channels_last":
            _link(conv, "_folded_bn", bn, "_folded_into")
            n += 1
    return n


def fuse_batch_norm_swish(model: keras.Model) -> int:
    """Link every FusedBatchNormalization -> SiLU pair of a functional model where the SiLU is the batch
    norm's only consumer, so that training on the fast path runs them as one op whose backward pass keeps
    only the batch norm's input (:func:`_batch_norm_swish`): less peak memory, the same numbers. Returns the
    number linked. Nothing changes on the stock path or at inference."""
    n = 0
    for bn, act in _only_consumer_pairs(model, FusedBatchNormalization, SiLU):
        if (not bn.renorm and not bn.synchronized and bn.axis in (-1, 3)
                and len(bn._inbound_nodes[0].input_tensors[0].shape) == 4):
            _link(bn, "_swish_into", act, "_applied_by")
            n += 1
    return n


def fuse_channel_scale(model: keras.Model) -> int:
    """Link every ChannelScale -> 1x1 Conv2D pair of a functional model (squeeze-excite's gate, then the
    block's projection) where the conv is the scale's only consumer, so that training on the fast path runs
    them as one batched MatMul with a kernel per image (:meth:`_FoldsBatchNorm.scaled_projection`). Only
    where an image's activations (H x W x C) are no smaller than its kernel gradient (C x O): measured on
    EfficientNetB0's blocks at batch 32, forward and backward, the batched MatMul took 0.3-0.8x the time of
    the multiply and the conv at 14-112 px and 1.9-3.3x at 7 px (``H W < O``). Returns the number linked.
    Nothing changes on the stock path or at inference."""
    n = 0
    for scale, conv in _only_consumer_pairs(model, ChannelScale, Conv2D):
        x_shape, s_shape = (t.shape for t in scale._inbound_nodes[0].input_tensors)
        h, w = x_shape[1], x_shape[2]
        if (len(x_shape) == 4 and tuple(s_shape[1:3]) == (1, 1) and h is not None and w is not None
                and h * w >= conv.filters and tuple(conv.kernel_size) == (1, 1) and tuple(conv.strides) == (1, 1)
                and tuple(conv.dilation_rate) == (1, 1) and conv.groups == 1 and not conv.explicit_padding
                and conv.data_format == "channels_last"):
            _link(scale, "_projected_by", conv, "_scaled_by")
            conv.input_spec = None  # in training it is handed its own output (O channels), not C
            n += 1
    return n


def fuse_mlp_gelu(model: keras.Model) -> int:
    """Link every Pointwise(GELU) -> linear Pointwise pair (ConvNeXt's MLP) where the second is the
    first's only consumer, so that training on the fast path hands the second the GELU's input and the
    second applies GELU and its MatMul as one op whose backward pass recomputes the GELU's output
    (:func:`_gelu_matmul`) instead of keeping that 4x-wide tensor from the forward pass: less peak memory,
    the same numbers. At inference on large inputs (ConvNeXt's first two stages at 224 px) the first hands
    the second its own input and the second computes both in bands of rows, one after another
    (:meth:`Pointwise._bands`), so the 4x-wide activations never exist whole: less peak memory, the same
    numbers. Either way the first layer's output is not its own: read features after the MLP, not between
    its layers. Returns the number linked. Nothing changes on the stock path."""
    n = 0
    for fc1, fc2 in _only_consumer_pairs(model, Pointwise, Pointwise):
        if fc1.activation is keras.activations.gelu and fc2.activation is keras.activations.linear and fc2.use_bias:
            _link(fc1, "_gelu_into", fc2, "_gelu_from")
            fc2.input_spec = None  # at inference on large inputs it is handed fc1's input (C channels), not 4C
            n += 1
    return n


@tf.custom_gradient
def _swish(x):
    """x * sigmoid(x) with a four-op gradient, sigmoid recomputed from x (as ``tf.nn.silu`` does, so only x
    is kept for the backward pass): ``tf.nn.silu``'s gradient also builds the gradient of its ``beta``
    (a sum over the whole tensor, then discarded), ~15 graph ops per activation to trace and optimize."""
    def grad(dy):
        with tf.control_dependencies([dy]):
            s = tf.sigmoid(x)
        return dy * (s + tf.raw_ops.SigmoidGrad(y=s, dy=x))  # sigmoid + x * sigmoid * (1 - sigmoid)

    return x * tf.sigmoid(x), grad


def _batch_norm_swish(x, gamma, beta, moving_mean, moving_variance, epsilon, factor):
    """swish(batch norm(x)) in training, and the updated moving mean and variance, keeping only x (which the
    batch norm's gradient needs anyway) for the backward pass: the normalised tensor in between, which the
    swish's gradient needs, is recomputed there from x and the batch statistics instead of being held from
    the forward pass to the backward one (EfficientNetB0 at 224 px, batch 32: 33 such tensors, 750 MB)."""

    @tf.custom_gradient
    def run(x, gamma, beta):
        y, mean, variance, saved_mean, saved_variance, workspace = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=moving_mean, variance=moving_variance, epsilon=epsilon,
            exponential_avg_factor=factor, data_format="NHWC", is_training=True)

        def grad(dz, *_):
            # the saved statistics are the batch mean and (biased) variance, as FusedBatchNormGradV3 reads them
            dy = _swish_grad_after_batch_norm(x, saved_mean, saved_variance, gamma, beta, dz, epsilon)
            dx, dgamma, dbeta, _, _ = tf.raw_ops.FusedBatchNormGradV3(
                y_backprop=dy, x=x, scale=gamma, reserve_space_1=saved_mean, reserve_space_2=saved_variance,
                reserve_space_3=workspace, epsilon=epsilon, data_format="NHWC", is_training=True)
            return dx, dgamma, dbeta

        return (y * tf.sigmoid(y), mean, variance), grad

    return run(x, gamma, beta)


def _swish_grad_after_batch_norm(x, mean, variance, gamma, beta, dz, epsilon):
    """The swish's input gradient at y = batch norm(x), recomputed from x in one XLA-fused elementwise
    kernel that reads x and dz once."""
    scale = gamma * tf.math.rsqrt(variance + epsilon)
    return _swish_grad_affine(x, scale, beta - mean * scale, dz)


@tf.function(jit_compile=True, autograph=False)
def _swish_grad_affine(x, scale, shift, dz):
    y = tf.cast(x, tf.float32) * scale + shift
    s = tf.sigmoid(y)
    return _xla_cast(tf.cast(dz, tf.float32) * (s + tf.raw_ops.SigmoidGrad(y=s, dy=y)), dz.dtype)


@keras.saving.register_keras_serializable(package="zoobot_tf")
class SiLU(layers.Layer):
    """SiLU / swish, x * sigmoid(x). On the fast path at inference it is written as Sigmoid and Mul, the
    pattern TensorFlow's graph optimiser fuses into a preceding convolution + bias on CPU; in training,
    the same with a lean gradient (:func:`_swish`), or nothing when the batch norm before it applies it
    (:func:`fuse_batch_norm_swish`)."""

    _applied_by = None  # the FusedBatchNormalization that applies this activation in training, if any

    def call(self, x, training=None):
        if not fast():
            return keras.activations.silu(x)
        bn = _linked(self, "_applied_by")
        if bn is not None and bn.applies_swish(training):
            return x
        return _swish(x) if training else x * tf.sigmoid(x)


@tf.custom_gradient
def _global_average_pool(x):
    """(B, H, W, C) -> (B, 1, 1, C) as one oneDNN average pool whose gradient is a broadcast of dy / (H W):
    oneDNN's AvgPoolGrad for a whole-image window took 56 of EfficientNetB0's 1,480 ms training step (batch
    32, float32) here, the broadcast about a third of that."""
    h, w = x.shape[1], x.shape[2]

    def grad(dy):  # scaled in float32: 1 / (H W) in bfloat16 would be off by up to 0.4%
        return tf.broadcast_to(tf.cast(tf.cast(dy, tf.float32) * (1.0 / (h * w)), dy.dtype), tf.shape(x))

    return tf.nn.avg_pool2d(x, (h, w), 1, "VALID"), grad


@keras.saving.register_keras_serializable(package="zoobot_tf")
class GlobalAveragePooling2D(layers.GlobalAveragePooling2D):
    """``keras.layers.GlobalAveragePooling2D``, on the fast path as one average pool over the whole (static)
    image: oneDNN's pooling kernel, 1.4-1.7x faster than the Mean reduction on CPU (EfficientNet pools in
    every squeeze-excite block), with a broadcast for its gradient (:func:`_global_average_pool`). Same
    numbers to float rounding."""

    def call(self, inputs):
        h, w = inputs.shape[1], inputs.shape[2]
        if not fast() or self.data_format != "channels_last" or h is None or w is None or len(inputs.shape) != 4:
            return super().call(inputs)
        x = _global_average_pool(inputs)
        return x if self.keepdims else tf.reshape(x, [-1, inputs.shape[-1]])


def _layer_norm_math(x, gamma, beta, epsilon):
    """LayerNorm over the last axis in float32: (output, per-row mean, per-row 1 / std)."""
    xf = tf.cast(x, tf.float32)
    mean = tf.reduce_mean(xf, axis=-1, keepdims=True)
    centred = xf - mean
    rstd = tf.math.rsqrt(tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True) + epsilon)
    return centred * rstd * tf.cast(gamma, tf.float32) + tf.cast(beta, tf.float32), mean, rstd


@tf.function(jit_compile=True, autograph=False)
def _layer_norm_last_axis(x, gamma, beta, epsilon, dtype):
    """LayerNorm over the last axis as one XLA kernel (statistics in float32), the output in ``dtype``."""
    return _xla_cast(_layer_norm_math(x, gamma, beta, epsilon)[0], dtype)


@tf.function(jit_compile=True, autograph=False)
def _layer_norm_forward(x, gamma, beta, epsilon, dtype):
    """LayerNorm over the last axis, one XLA kernel, in float32 and the output rounded to ``dtype``
    (as Keras'); also returns the statistics."""
    y, mean, rstd = _layer_norm_math(x, gamma, beta, epsilon)
    return _xla_cast(y, dtype), mean, rstd


@tf.function(jit_compile=True, autograph=False)
def _layer_norm_backward(x, mean, rstd, gamma, dy):
    """The LayerNorm's input gradient (in x's dtype) from its input and statistics, and dy * x-hat (whose
    column sums are gamma's gradient), one XLA kernel in float32."""
    xhat = (tf.cast(x, tf.float32) - mean) * rstd
    dy = tf.cast(dy, tf.float32)
    g = dy * gamma
    dx = rstd * (g - tf.reduce_mean(g, axis=-1, keepdims=True)
                 - xhat * tf.reduce_mean(g * xhat, axis=-1, keepdims=True))
    return _xla_cast(dx, x.dtype), dy * xhat


def _layer_norm_trained(x, gamma, beta, epsilon, dtype):
    """LayerNorm over the last axis for training: one XLA kernel forward, one backward and two column sums
    as MatMuls (:func:`_bias_gradient`; XLA's own column reductions made the step slower), keeping only x
    and the per-row statistics. Keras differentiates its moments and normalisation op by op.
    ConvNeXt-Nano's training step (mixed_bfloat16) 19.9-20.6 -> 21.7-21.9 img/s and 110-150 MB less peak
    memory; its first step 0.8 s longer (the kernels' compilation). Computed in float32 whatever x's dtype;
    the output is rounded to ``dtype`` and the input gradient to x's dtype, as Keras does."""

    @tf.custom_gradient
    def run(x, gamma, beta):
        y, mean, rstd = _layer_norm_forward(x, gamma, beta, epsilon, dtype)

        def grad(dy):
            dx, dyxhat = _layer_norm_backward(x, mean, rstd, gamma, dy)
            c = x.shape[-1]
            return (dx, _bias_gradient(tf.reshape(dyxhat, [-1, c]), gamma.dtype),
                    _bias_gradient(tf.reshape(tf.cast(dy, tf.float32), [-1, c]), beta.dtype))

        return y, grad

    return run(x, gamma, beta)


@keras.saving.register_keras_serializable(package="zoobot_tf")
class LayerNormalization(layers.LayerNormalization):
    """``keras.layers.LayerNormalization``; on the fast path at inference on CPU (over the last axis, with
    scale and centre), one XLA kernel that reads the input once for both statistics and writes the output
    once. Keras runs it as moments, then normalisation: several passes over the tensor, which made the
    LayerNorms a quarter of ConvNeXt-Nano's inference time on an AMX CPU (55 -> 74 img/s without them;
    2x faster each, 30 -> 14 ms on a 32x56x56x80 tensor). In training, :func:`_layer_norm_trained`, also on
    bfloat16 inputs (ConvNeXt's stem LayerNorm after its bfloat16 convolution: ~50 ms of thread time a
    ConvNeXt-Nano training step op by op in Keras). Under a ``mixed_bfloat16`` policy (ConvNeXt's LayerNorms
    before its MLPs) the float32 input is normalised in float32 and the kernel writes the bfloat16 output
    itself (Keras: a float32 result, then a Cast), and its gradient arrives in bfloat16 (ConvNeXt-Nano
    mixed_bfloat16 training +2-6% in 3 interleaved rounds).
    Same weights and config; same numbers to float rounding (as Keras: computed in float32, the output
    rounded to the compute dtype)."""

    def call(self, inputs, training=None):
        if (not fast() or self.rms_scaling or not (self.center and self.scale)
                or self.compute_dtype not in ("float32", "bfloat16")
                or list(self.axis) not in ([-1], [len(inputs.shape) - 1]) or not on_cpu_only()):
            return super().call(inputs)
        gamma, beta = tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta)
        epsilon = tf.constant(self.epsilon, tf.float32)
        # as Keras: rounded to the input's dtype, then cast to the compute dtype (the lower of the two)
        dtype = inputs.dtype if inputs.dtype == tf.bfloat16 else tf.as_dtype(self.compute_dtype)
        norm = _layer_norm_trained if training else _layer_norm_last_axis
        return tf.cast(norm(inputs, gamma, beta, epsilon, dtype), self.compute_dtype)


def _gelu_cdf_pdf(x):
    xf = tf.cast(x, tf.float32)  # bfloat16 activations are computed in float32 inside the fused kernels
    # erf, not erfc (as tf.nn.gelu): these passes are compute-bound in XLA's erfc (ConvNeXt-Nano, bfloat16:
    # inference 76-79 -> 89-91 img/s, training +6-10%). In the negative tail 1 + erf keeps erfc's absolute
    # precision, not its relative one (GELU within 1e-6 absolute, far below bfloat16's rounding of O(1)
    # activations); XLA's erf stops 1.8e-7 short of -1, so below x = -5.5 (GELU > -1.1e-7) the CDF is 0.
    cdf = tf.where(xf < -5.5, 0.0, 0.5 + 0.5 * tf.math.erf(xf * (1.0 / math.sqrt(2.0))))
    return xf, cdf, tf.exp(-0.5 * tf.square(xf)) * (1.0 / math.sqrt(2.0 * math.pi))


@tf.function(jit_compile=True, autograph=False)
def _gelu_forward(x):
    xf, cdf, _ = _gelu_cdf_pdf(x)  # (XLA drops the unused pdf)
    return _xla_cast(xf * cdf, x.dtype)


@tf.function(jit_compile=True, autograph=False)
def _gelu_backward(x, dy):
    xf, cdf, pdf = _gelu_cdf_pdf(x)
    return _xla_cast(tf.cast(dy, tf.float32) * (cdf + xf * pdf), dy.dtype)


@tf.custom_gradient
def fused_gelu(x):
    """Exact (erf) GELU whose forward and backward passes are each one XLA-fused elementwise kernel.

    TensorFlow differentiates ``tf.nn.gelu`` into a dozen elementwise ops, each a full pass over
    ConvNeXt's widest activations; fused, the backward pass reads x and dy once (240 -> 100 ms on a
    32x56x56x384 tensor on this CPU). Same numbers as ``tf.nn.gelu(x, approximate=False)`` to float rounding
    (within 1e-6 absolute in the far negative tail, where it uses erf and TensorFlow erfc).
    """
    def grad(dy):
        return _gelu_backward(x, dy)

    return _gelu_forward(x), grad


def _bias_gradient(dy, dtype):
    """The sum of dy's rows as a (1 x n) @ (n x c) MatMul: oneDNN accumulates in float32 and rounds once,
    so in bfloat16 it is the float32 sum rounded to bfloat16 (a 100,352 x 320 sum: 37-41 ms cast to float32
    and reduced, 4.5 ms as the MatMul). TensorFlow's BiasAddGrad sums bfloat16 in bfloat16 (0.6 relative
    error on that sum). A static row count builds the ones row from a constant shape, and the result's
    leading 1 is squeezed away: 2-5 ops in the step's graph, not ~14 (ConvNeXt-Nano has 66 of these)."""
    rows = dy.shape[0] if dy.shape[0] is not None else tf.shape(dy)[0]
    return tf.cast(tf.squeeze(tf.matmul(tf.ones([1, rows], dy.dtype), dy), 0), dtype)


def _dense_forward(x, kernel, bias):
    """x @ kernel + bias for 2-D x; in bfloat16 on CPU as a 1x1 Conv2D + BiasAdd. oneDNN runs TensorFlow's
    fused bfloat16 MatMul + BiasAdd (+ GELU) as a generic GEMM inner product (ONEDNN_VERBOSE:
    ``x64:gemm:jit``) and the 1x1 convolution on its AMX kernels (``brgconv_1x1``): fc1 of ConvNeXt-Nano's
    second stage 26-34 -> 3-4 ms. float32 keeps the fused MatMul (the convolution was 5% slower there)."""
    if x.dtype == tf.bfloat16 and on_cpu_only():
        y = tf.nn.conv2d(tf.reshape(x, [1, -1, 1, x.shape[-1]]), kernel[None, None], 1, "VALID")
        return tf.reshape(tf.nn.bias_add(y, bias), [-1, kernel.shape[-1]])
    return tf.nn.bias_add(tf.matmul(x, kernel), bias)


@tf.custom_gradient
def _dense(x, kernel, bias):
    """:func:`_dense_forward` with the MatMul's gradient (AMX MatMuls), not a convolution's; the bias
    gradient accumulated in float32 (:func:`_bias_gradient`)."""
    def grad(dy):
        dx, dkernel = tf.matmul(dy, kernel, transpose_b=True), tf.matmul(x, dy, transpose_a=True)
        return dx, dkernel, _bias_gradient(dy, bias.dtype)

    return _dense_forward(x, kernel, bias), grad


def _gelu_matmul(h, kernel, bias):
    """gelu(h) @ kernel + bias for 2-D h, keeping only h (which the GELU's gradient needs anyway) for the
    backward pass: gelu(h), which the kernel's gradient needs, is recomputed there (one XLA kernel) instead of
    being held from the forward pass to the backward one (ConvNeXt-Tiny at 224 px, batch 32: ~1.1 GB in
    float32). The bias gradient is accumulated in float32. Recomputing costs no measurable time here: a
    stage-1 MLP's backward pass is dominated by its MatMuls."""

    @tf.custom_gradient
    def run(h, kernel, bias):
        y = _dense_forward(_gelu_forward(h), kernel, bias)

        def grad(dy):
            with tf.control_dependencies([dy]):  # recomputed when the gradient arrives, not kept
                g = _gelu_forward(h)
            dkernel = tf.matmul(g, dy, transpose_a=True)
            dh = _gelu_backward(h, tf.matmul(dy, kernel, transpose_b=True))
            dbias = _bias_gradient(dy, bias.dtype)
            return dh, dkernel, dbias

        return y, grad

    return run(h, kernel, bias)


# values of an MLP's hidden (4x-wide) activations per image in one band at inference (:meth:`Pointwise._bands`)
MLP_BAND = 2 ** 18


@keras.saving.register_keras_serializable(package="zoobot_tf")
class Pointwise(layers.Dense):
    """A Dense layer over the channels of an NHWC tensor (ConvNeXt's MLP), with an optional folded layer scale.

    Fast path: one 2-D MatMul + BiasAdd (+ GELU). Keras' Dense on a 4-D input becomes a BatchMatMul, which
    TensorFlow's graph optimiser cannot fuse; flattened to (positions, channels), MatMul + BiasAdd + exact
    GELU is rewritten into one oneDNN kernel with the activation as a post-op (ConvNeXt's MLP forward 1.8x
    faster here: 109 vs 200 ms for a 32x56x56x96 block). In training on CPU the GELU is :func:`fused_gelu`.
    In bfloat16 on CPU the forward MatMul is a 1x1 convolution (:func:`_dense`; oneDNN's bfloat16 fused
    MatMul is a generic GEMM) and the GELU its own XLA pass: ConvNeXt-Nano's bfloat16 inference 1.25-1.35x
    and training 1.1x as fast.
    Linked to the next Pointwise (:func:`fuse_mlp_gelu`), at inference on large inputs the two compute in
    bands of rows, so the 4x-wide hidden activations never exist whole.
    ``layer_scale`` (ConvNeXt's per-channel ``gamma``, initial value) is folded into the kernel and bias
    (``x @ (W g) + b g``). Stock path: ``Dense`` then ``x * gamma``. Same weights either way (kernel,
    bias[, gamma]); ``layer_scale_name`` is the timm key of ``gamma`` (for :mod:`zoobot_tf.pretrained`).
    """

    _gelu_into = None  # the Pointwise that applies this layer's GELU in training (fuse_mlp_gelu)
    _gelu_from = None  # the Pointwise whose GELU this layer applies in training

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
        if not fast():
            x = super().call(inputs)
            return x * tf.cast(self.gamma, x.dtype) if self.layer_scale is not None else x
        before = _linked(self, "_gelu_from")
        if self.hands_on_input(inputs, training):
            return inputs  # the next Pointwise computes this layer too, band by band
        if before is not None and before.hands_on_input(inputs, training):
            return self._mlp_in_bands(before, inputs)
        shape = tf.shape(inputs)
        x = self._apply(tf.reshape(inputs, [-1, inputs.shape[-1]]), training, before)
        return tf.reshape(x, tf.concat([shape[:-1], [self.units]], axis=0))

    def _apply(self, x, training, before):
        """This layer on 2-D (positions, channels) ``x``, fast path."""
        kernel, bias = self.kernel, self.bias if self.use_bias else None
        if self.layer_scale is not None:
            kernel = kernel * self.gamma
            bias = None if bias is None else bias * self.gamma
        # bfloat16 on CPU: the forward MatMul as a 1x1 convolution, so no MatMul to fuse the GELU into
        as_conv = bias is not None and x.dtype == tf.bfloat16 and on_cpu_only()
        if before is not None and before.defers_gelu(training):
            x = _gelu_matmul(x, tf.cast(kernel, x.dtype), tf.cast(bias, x.dtype))
        elif as_conv:
            x = _dense(x, tf.cast(kernel, x.dtype), tf.cast(bias, x.dtype))
        else:
            x = tf.matmul(x, tf.cast(kernel, x.dtype))
            if bias is not None:
                x = tf.nn.bias_add(x, tf.cast(bias, x.dtype))
        if self.activation is keras.activations.gelu:
            if self.defers_gelu(training):
                pass  # the next Pointwise applies it
            elif training and on_cpu_only():
                x = fused_gelu(x)
            elif as_conv:
                x = _gelu_forward(x)  # after the convolution: one XLA pass
            else:
                x = tf.nn.gelu(x, approximate=False)  # fused into the MatMul by oneDNN
        elif self.activation is not keras.activations.linear:
            x = self.activation(x)
        return x

    def _mlp_in_bands(self, fc1, inputs):
        """fc2(fc1(inputs)) in bands of rows, one band after another (control dependencies), so that only
        one band of the 4x-wide hidden activations exists at a time."""
        outputs = []
        for band in tf.split(inputs, fc1._bands(inputs), axis=1):
            if outputs:
                with tf.control_dependencies([outputs[-1]]):
                    band = tf.identity(band)
            shape = tf.shape(band)
            y = self._apply(fc1._apply(tf.reshape(band, [-1, band.shape[-1]]), False, None), False, fc1)
            outputs.append(tf.reshape(y, tf.concat([shape[:-1], [self.units]], axis=0)))
        return tf.concat(outputs, axis=1)

    def _bands(self, inputs) -> list[int]:
        """Row counts that split an NHWC input so that each band's output holds at most ``MLP_BAND``
        values per image (one band when the rows are unknown or few)."""
        rows, cols = inputs.shape[1:3] if inputs.shape.rank == 4 else (None, None)
        if rows is None or cols is None:
            return [rows]
        n = max(1, min(rows, math.ceil(rows * cols * self.units / MLP_BAND)))
        return [rows // n + (i < rows % n) for i in range(n)]

    def defers_gelu(self, training) -> bool:
        """True when this layer returns its GELU's input and the Pointwise after it applies the GELU (fast
        path, training, on CPU; see :func:`fuse_mlp_gelu`)."""
        return fast() and _linked(self, "_gelu_into") is not None and bool(training) and on_cpu_only()

    def hands_on_input(self, inputs, training) -> bool:
        """True when this layer returns its input and the Pointwise after it computes both layers in bands
        of rows (fast path, inference, on CPU, a large input; see :func:`fuse_mlp_gelu`)."""
        return (fast() and _linked(self, "_gelu_into") is not None and not training and on_cpu_only()
                and len(self._bands(inputs)) > 1)

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


def centre_shift(x: tf.Tensor, image_size: int, margin: int, phase: float, fill_mode: str) -> tf.Tensor:
    """The view layer's inference map (centre crop shifted by ``phase`` px on both axes) as two 2-tap filters.

    The same numbers as ``ImageProjectiveTransformV3`` with that transform and ``fill_mode`` (tested), in a
    few slices and adds instead of a per-pixel coordinate transform (7% of an EfficientNetB0 inference step).
    The neighbour past the last row/column exists when the image has a margin; otherwise it is the fill:
    the edge pixel for 'reflect'/'nearest', zero for 'constant'.
    """
    s, m, f = image_size, margin, phase
    if m == 0:
        pad_mode = "CONSTANT" if fill_mode == "constant" else "SYMMETRIC"
        x = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]], mode=pad_mode)
    x = x[:, m:m + s + 1, m:m + s + 1, :]
    x = (1.0 - f) * x[:, :-1] + f * x[:, 1:]
    return (1.0 - f) * x[:, :, :-1] + f * x[:, :, 1:]
