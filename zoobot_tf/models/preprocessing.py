"""The model's view of a galaxy image: channel conversion, crop, resize, rescale and augmentation.

:class:`GalaxyView` is the first layer of every zoobot-tf model, so a saved or exported model
takes raw pixels and preprocesses them exactly as in training. Its contract:

* input: (batch, H, W, C_in) pixels in [0, 255] (uint8 or float; any H, W; C_in 1, 2, 3 or 4 -
  a trailing alpha channel is dropped);
* output: (batch, image_size, image_size, channels) float32 in [0, 1]. This layer is the only place
  that divides by 255, so images are never divided twice.

Geometry is done in one resampling step (``ImageProjectiveTransformV3``): the image is first resized
with antialiasing so the central ``crop_fraction`` region is ``image_size`` pixels across, then
sampled through an affine map with bilinear interpolation. In training (``augment=True``) the map
adds a rotation by any angle, horizontal/vertical flips and a random resized crop (area
``crop_scale`` of the region, aspect ``crop_ratio``), as Zoobot does.

Train/test consistency: bilinear sampling at a random sub-pixel phase f smooths the image (it
multiplies the power spectrum by 1 - 2 f (1 - f)(1 - cos w) per axis), so augmented training images
are less noisy than an exact pixel copy would be (noise std x0.67). A model trained on them and
shown unresampled images at test time sees a different noise level and does much worse (measured:
validation loss 50 vs 37 on the synthetic set). At inference the map is therefore the centre crop
shifted by the phase f* = (1 - 1/sqrt(3)) / 2 ~ 0.211 px, whose transfer f*(1 - f*) = 1/6 equals the
mean of f (1 - f) over uniform phases: test images get exactly the expected smoothing of training.

Chirality: flips turn clockwise spirals anticlockwise. For tasks that label winding direction,
use ``flip=False`` (rotation only).
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from zoobot_tf.ops import fast
from zoobot_tf.ops.layers import centre_shift

# Uniform draws per image of a random view: crop area, aspect ratio, x and y shift, angle, two flips.
N_RANDOM = 7
# Sub-pixel phase of the inference resampling: f (1 - f) = 1/6, the mean over uniform random phases.
INFERENCE_PHASE = (1.0 - 1.0 / math.sqrt(3.0)) / 2.0


def to_channels(images: tf.Tensor, channels: int) -> tf.Tensor:
    """(B, H, W, C_in) -> (B, H, W, channels). Greyscale is the channel mean (as Zoobot); alpha dropped."""
    c_in = images.shape[-1]
    if c_in is None:
        raise ValueError("The channel dimension of the images must be known.")
    if c_in in (2, 4):  # grey+alpha, RGB+alpha
        images = images[..., : c_in - 1]
        c_in -= 1
    if c_in == channels:
        return images
    if channels == 1:
        if fast() and images.dtype == tf.float32:
            # as a 1x1 convolution (oneDNN): TensorFlow's Mean over the last axis of (B, 224, 224, 3) float32 took
            # 0.21 ms an image here, the convolution 0.08 (EfficientNetB0's whole view: 0.38 ms an image)
            return tf.nn.conv2d(images, tf.fill([1, 1, c_in, 1], 1.0 / c_in), 1, "VALID")
        return tf.reduce_mean(images, axis=-1, keepdims=True)
    if c_in == 1 and channels == 3:
        return tf.tile(images, [1, 1, 1, 3])
    raise ValueError(f"Cannot convert {c_in} input channels to {channels}.")


@keras.saving.register_keras_serializable(package="zoobot_tf")
class GalaxyView(keras.layers.Layer):
    """Pixels [0, 255] of any size -> model input [0, 1] of ``image_size``; augments when training.

    Args:
        image_size: output side in pixels.
        channels: 1 (greyscale, channel mean) or 3 (colour).
        crop_fraction: side of the central region kept, as a fraction of the image side (per data set:
            e.g. 0.35 for SDSS GZ1 cutouts where the galaxy fills the centre).
        augment: random rotation/flip/resized crop when called with ``training=True``.
        rotate, flip: which augmentations to use (``flip=False`` for chirality tasks).
        crop_scale: (min, max) area of the random crop, as a fraction of the region.
        crop_ratio: (min, max) aspect ratio of the random crop (log-uniform).
        fill_mode: how pixels outside the image are filled after rotation ("reflect", "constant", "nearest").
    """

    def __init__(self, image_size: int = 224, channels: int = 1, crop_fraction: float = 1.0, augment: bool = True,
                 rotate: bool = True, flip: bool = True, crop_scale=(0.7, 0.8), crop_ratio=(0.9, 1.1),
                 fill_mode: str = "reflect", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3. Received: channels={channels}")
        if not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1]. Received: crop_fraction={crop_fraction}")
        if fill_mode.lower() not in ("reflect", "constant", "nearest", "wrap"):
            raise ValueError(f"Unknown fill_mode. Received: fill_mode={fill_mode!r}")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.crop_fraction = float(crop_fraction)
        self.augment = bool(augment)
        self.rotate = bool(rotate)
        self.flip = bool(flip)
        self.crop_scale = tuple(float(v) for v in crop_scale)
        self.crop_ratio = tuple(float(v) for v in crop_ratio)
        self.fill_mode = fill_mode.lower()
        # The image is resized so that its central crop_fraction region is image_size pixels across;
        # load_size - image_size is kept even so that the centre crop is an exact pixel copy.
        margin = int(round(self.image_size * (1.0 / self.crop_fraction - 1.0) / 2.0))
        self.load_size = self.image_size + 2 * margin

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.image_size, self.image_size, self.channels)

    def resize_to_load_size(self, images: tf.Tensor) -> tf.Tensor:
        """(B, H, W, C) float -> (B, load_size, load_size, C), antialiased; a no-op when already that size."""
        p = self.load_size
        h, w = images.shape[1], images.shape[2]
        if h == p and w == p:
            return images
        if h is not None and w is not None:
            return tf.image.resize(images, (p, p), antialias=True)
        shape = tf.shape(images)
        return tf.cond(tf.logical_and(shape[1] == p, shape[2] == p),
                       lambda: tf.ensure_shape(images, [None, p, p, images.shape[-1]]),
                       lambda: tf.image.resize(images, (p, p), antialias=True))

    def _transforms(self, batch: tf.Tensor, random: bool, uniforms: tf.Tensor | None = None) -> tf.Tensor:
        """(B, 8) projective transforms mapping output pixels to input (load_size) pixels. ``uniforms``: the
        random transforms' (B, :data:`N_RANDOM`) draws in [0, 1), drawn here when not given."""
        s_out = float(self.image_size)
        region = s_out  # the central region of the pre-sized image is image_size pixels across
        c_out = (s_out - 1.0) / 2.0
        c_in = (self.load_size - 1.0) / 2.0
        ones = tf.ones([batch])
        if random:
            u = tf.random.uniform([batch, N_RANDOM]) if uniforms is None else tf.cast(uniforms, tf.float32)
            area = self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * u[:, 0]
            lo, hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
            ratio = tf.exp(lo + (hi - lo) * u[:, 1])
            w = region * tf.sqrt(area * ratio)
            h = region * tf.sqrt(area / ratio)
            tx = (2.0 * u[:, 2] - 1.0) * tf.maximum(region - w, 0.0) / 2.0
            ty = (2.0 * u[:, 3] - 1.0) * tf.maximum(region - h, 0.0) / 2.0
            theta = 2.0 * math.pi * u[:, 4] if self.rotate else tf.zeros([batch])
            if self.flip:
                fx = tf.where(u[:, 5] < 0.5, -ones, ones)
                fy = tf.where(u[:, 6] < 0.5, -ones, ones)
            else:
                fx = fy = ones
        else:
            w = h = region * ones
            tx = ty = INFERENCE_PHASE * ones
            theta = tf.zeros([batch])
            fx = fy = ones
        sx, sy = fx * w / s_out, fy * h / s_out
        cos, sin = tf.cos(theta), tf.sin(theta)
        a0, a1 = cos * sx, -sin * sy
        b0, b1 = sin * sx, cos * sy
        a2 = c_in + tx - (a0 + a1) * c_out
        b2 = c_in + ty - (b0 + b1) * c_out
        zeros = tf.zeros([batch])
        return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def call(self, images, training=None, augment=None, uniforms=None):
        """``augment`` overrides ``training`` for the augmentation alone (test-time augmentation);
        ``uniforms`` (B, :data:`N_RANDOM`) in [0, 1) fix its random draws (else the layer draws them)."""
        x = tf.cast(images, tf.float32)
        x = to_channels(x, self.channels)
        x = self.resize_to_load_size(x)
        do_augment = self.augment and bool(training) if augment is None else bool(augment)
        if not do_augment and self.fill_mode != "wrap" and fast():
            margin = (self.load_size - self.image_size) // 2
            return centre_shift(x, self.image_size, margin, INFERENCE_PHASE, self.fill_mode) / 255.0
        transforms = self._transforms(tf.shape(x)[0], random=do_augment, uniforms=uniforms)
        x = tf.raw_ops.ImageProjectiveTransformV3(
            images=x, transforms=transforms, output_shape=[self.image_size, self.image_size],
            fill_value=0.0, interpolation="BILINEAR", fill_mode=self.fill_mode.upper())
        x = tf.ensure_shape(x, [None, self.image_size, self.image_size, self.channels])
        return x / 255.0

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "channels": self.channels,
                "crop_fraction": self.crop_fraction, "augment": self.augment, "rotate": self.rotate,
                "flip": self.flip, "crop_scale": list(self.crop_scale), "crop_ratio": list(self.crop_ratio),
                "fill_mode": self.fill_mode}
