"""Measured CPU speed-ups (and memory savings) that rely on TensorFlow/Keras internals, behind one switch.

Everything in this package makes zoobot-tf faster on CPUs, or lets it train in less memory (each change
was measured with the scripts in ``benchmarks/``), and nothing in it changes what a model computes. The layers, the optimizer and the model
keep their classes, weights and configs whichever path runs, so a model saved under one path loads and
runs under the other.

The switch: ``ZOOBOT_TF_FAST=0`` in the environment (read when this module is imported), or
:func:`set_fast` / :func:`fast_path` in code. It is read when a layer is *traced*: set it before building
or first calling a model (an already-traced ``tf.function`` keeps the path it was traced with). With the
fast path off every layer runs stock Keras code:

=============================  ==============================================  ===========================
speed-up                        fast path                                       stock fallback
=============================  ==============================================  ===========================
batch norm                      ``tf.raw_ops.FusedBatchNormV3`` (one kernel)     ``keras.layers.BatchNormalization``
conv -> batch norm (inference)  batch norm folded into the conv's kernel/bias    conv, then batch norm
strided conv padding            padding inside the conv op                       ``tf.pad`` then a valid conv
bfloat16 depthwise training     the conv in float32 (bfloat16 gradients are      Keras' bfloat16 depthwise conv
                                slow on CPUs)
5x5+ depthwise gradient         stride 1: the filter gradient image by image,    oneDNN's filter-gradient
                                a loop of per-image depthwise convs              kernel
swish                           Sigmoid * Mul (fused by oneDNN) at inference;     ``keras.activations.silu``
                                a four-op gradient in training
BN -> swish (training)          one op; the backward pass recomputes the swish   batch norm, then swish
                                input from the BN input (one XLA kernel)
global average pool             one oneDNN average pool                          ``GlobalAveragePooling2D``
ConvNeXt MLP                    2-D MatMul + fused GELU, layer scale folded      Dense + GELU + scale
ConvNeXt MLP (bfloat16, CPU)    forward as a 1x1 conv (oneDNN's AMX kernels),    Dense + GELU + scale
                                MatMul gradients, GELU as one XLA pass
LayerNorm (CPU)                 one XLA kernel at inference; in training one     ``keras.layers.LayerNormalization``
                                forward, one backward, column sums as MatMuls
GELU gradient (training, CPU)   one XLA kernel forward, one backward (erf)       ``tf.nn.gelu`` (erfc)
bfloat16 out of XLA kernels     rounded by the float32 bits (XLA's own           no XLA kernels
                                conversion is slow on CPUs), same numbers
MLP GELU output (training)      recomputed in fc2's backward pass, not kept      kept from the forward pass
MLP on large inputs (inference) fc1 -> GELU -> fc2 in bands of rows, one      one pass over the whole
                                after another (no whole 4x-wide tensor)          tensor
view shift (inference)          two 2-tap filters                                projective transform
greyscale view                  the channel mean as a 1x1 convolution            ``tf.reduce_mean``
AdamW update                    one ``ResourceApplyAdam`` per variable           Keras' AdamW update
gradient clipping               one ``L2Loss`` per tensor                        Keras' clip_by_global_norm
Dirichlet-multinomial loss      every question at once, sums as one matmul       tfp, one question at a time
Grappler (first call)           one round of passes, no memory optimizer         two rounds, memory optimizer
inference executor              TensorFlow's single-threaded executor: a         TensorFlow's executor (one
                                function's ops in order on the calling thread    inter-op thread per core)
loss/metrics build (strategy)   from the built model's output shapes             a symbolic forward trace
tf.data pipelines               autotuning off (AUTOTUNE: one call per core)     autotuning on
=============================  ==============================================  ===========================

Correctness fixes for Keras 3 bugs that also reach into internals (gradient clipping after the
cross-replica sum; ``fit`` under MultiWorkerMirroredStrategy, keras-team/keras#20585) live here too
(:mod:`zoobot_tf.ops.keras_fixes`, :mod:`zoobot_tf.ops.optimizer`) but are not switched off: without them
the stock path would compute something different. ``python -m zoobot_tf.ops.selfcheck`` checks, on the
installed TensorFlow and Keras, that every fast path still gives the stock result and how much faster
it is: an upgrade is one decision, not an audit.
"""
from __future__ import annotations

import contextlib
import os

_FAST = os.environ.get("ZOOBOT_TF_FAST", "1").strip().lower() not in ("0", "false", "no", "off")


def fast() -> bool:
    """True when the fast paths are used (the default; ``ZOOBOT_TF_FAST=0`` turns them off)."""
    return _FAST


def set_fast(enabled: bool) -> None:
    """Use the fast paths (True) or stock Keras code (False) in layers traced from now on."""
    global _FAST
    _FAST = bool(enabled)


@contextlib.contextmanager
def fast_path(enabled: bool):
    """``with fast_path(False): ...`` builds and traces under the stock path, then restores the setting."""
    previous = fast()
    set_fast(enabled)
    try:
        yield
    finally:
        set_fast(previous)
