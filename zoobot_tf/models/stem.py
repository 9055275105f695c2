"""Moving an encoder's weights between greyscale and colour input.

The stem's kernel is the only weight that depends on the input channels. Greyscale is the channel mean
(:func:`zoobot_tf.models.preprocessing.to_channels`), so:

* greyscale weights on colour input: each channel gets a third of the weight, and a grey image (equal
  channels) gives exactly the greyscale encoder's features; training is then free to use colour;
* colour weights on greyscale input that is the replicated channel (timm's convention): the sum.
"""
from __future__ import annotations

import numpy as np


def adapt_input_channels(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A conv kernel ``(kh, kw, in, out)`` for ``channels`` input channels (1 or 3); returned as is when it
    already has them. Raises ``ValueError`` for any other pair."""
    kernel = np.asarray(kernel)
    have = kernel.shape[2]
    if have == channels:
        return kernel
    if have == 3 and channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    if have == 1 and channels == 3:
        return np.repeat(kernel / 3.0, 3, axis=2)
    raise ValueError(f"Cannot adapt a stem kernel with {have} input channels to {channels}.")


def is_channel_mismatch(have: tuple, want: tuple) -> bool:
    """True for a conv kernel shape ``have`` that differs from ``want`` only in its input channels, one
    greyscale and the other colour: what :func:`adapt_input_channels` converts."""
    have, want = tuple(have), tuple(want)
    return (len(have) == len(want) == 4 and have[:2] == want[:2] and have[3] == want[3]
            and {have[2], want[2]} == {1, 3})


def transfer_encoder_weights(source, target) -> int:
    """Copy ``source`` encoder's weights into ``target``, the same architecture built for the same or the
    other channel count (the stem kernel adapted). Returns how many kernels were adapted (0 or 1)."""
    src, dst = source.get_weights(), target.weights
    if len(src) != len(dst):
        raise ValueError(f"Encoders differ: {len(src)} weights against {len(dst)}.")
    values, adapted = [], 0
    for value, variable in zip(src, dst):
        shape = tuple(variable.shape)
        if is_channel_mismatch(value.shape, shape):
            value = adapt_input_channels(value, shape[2])
            adapted += 1
        values.append(value)
    if adapted > 1:
        raise ValueError("Encoders differ in more than the stem's input channels.")
    target.set_weights(values)
    return adapted
