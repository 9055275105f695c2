"""AdamW with per-variable learning-rate multipliers, replica-correct gradient clipping and a fused update.

Two things Keras 3's AdamW does not do, both needed here (both reach into Keras' optimizer internals,
hence this package):

* Layer-wise learning-rate decay for finetuning (Zoobot: x0.75 per block from the head down).
  Adam is invariant to gradient scale, so the multiplier must act on the step itself (and on the
  decoupled weight decay), not on the gradient.
* Gradient clipping under tf.distribute. Keras 3 clips each replica's partial gradient *before*
  the cross-replica sum, so ``global_clipnorm`` under MirroredStrategy differs from one device.
  Here gradients are summed across replicas first, then clipped, then applied (tested against
  a single-device step in ``tests/test_distribute.py``).

And one speed-up behind the :func:`zoobot_tf.ops.fast` switch: one fused ``ResourceApplyAdam`` kernel per
variable with its scalars built once per graph, and the global norm from one ``L2Loss`` per tensor (10 s
less tracing of EfficientNetB0's first step; ConvNeXt-T's step graph 8,128 -> 6,689 ops). On the stock
path the update and the norm are Keras' own.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from zoobot_tf.ops import fast


def clip_by_global_norm(grads, clip_norm: float) -> list:
    """Keras' ``clip_by_global_norm`` (scale by clip / max(norm, clip); NaN/inf norms give NaN) with one
    ``L2Loss`` kernel per tensor instead of Square + Sum + a constant: a third of the graph ops."""
    present = [g for g in grads if g is not None]
    if not present:
        return list(grads)
    squares = tf.add_n([tf.cast(tf.raw_ops.L2Loss(t=g), tf.float32) for g in present])
    norm = tf.sqrt(2.0 * squares)
    scale = clip_norm * tf.minimum(1.0 / norm, 1.0 / clip_norm) + (norm - norm)
    return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]


def _in_multi_replica_context() -> bool:
    ctx = tf.distribute.get_replica_context()
    return ctx is not None and ctx.num_replicas_in_sync > 1


@keras.saving.register_keras_serializable(package="zoobot_tf")
class ZoobotAdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` plus ``lr_multipliers``: {variable path prefix: multiplier}.

    The longest matching prefix of ``variable.path`` wins; unmatched variables use 1.0.
    """

    def __init__(self, learning_rate=1e-3, weight_decay=0.01, lr_multipliers: dict | None = None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self._multiplier_by_index: list[float] = []

    def build(self, variables):
        super().build(variables)
        self._multiplier_by_index = [self.multiplier_for(v.path) for v in variables]

    def multiplier_for(self, path: str) -> float:
        best, best_len = 1.0, -1
        for prefix, m in self.lr_multipliers.items():
            if path.startswith(prefix) and len(prefix) > best_len:
                best, best_len = m, len(prefix)
        return best

    def _multiplier(self, variable) -> float:
        if not self._multiplier_by_index:
            return 1.0
        return self._multiplier_by_index[self._get_variable_index(variable)]

    def _fused(self) -> bool:
        return fast() and not self.amsgrad and not self.use_ema and not self.gradient_accumulation_steps

    def _step_scalars(self, dtype, multiplier: float = 1.0) -> dict:
        """Every scalar of the update (lr, decay, betas, their powers, epsilon), built once per traced graph,
        dtype and lr multiplier instead of once per variable: a ConvNeXt-T step has 182 variables."""
        def scalars():
            step = tf.cast(self.iterations + 1, dtype)
            beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
            lr = tf.cast(self.learning_rate, dtype)
            if multiplier != 1.0:
                lr = lr * multiplier
            return {"lr": lr, "decay": lr * tf.cast(self.weight_decay or 0.0, dtype),
                    "beta_1": beta_1, "beta_2": beta_2, "epsilon": tf.cast(self.epsilon, dtype),
                    "beta_1_power": tf.pow(beta_1, step), "beta_2_power": tf.pow(beta_2, step)}

        if tf.executing_eagerly():  # no graph to cache in: the values change every step
            return scalars()
        graph = id(tf.compat.v1.get_default_graph())
        cache = getattr(self, "_scalar_cache", None)
        if cache is None or cache[0] != graph:
            cache = (graph, {})
            self._scalar_cache = cache
        key = (dtype, multiplier)
        if key not in cache[1]:
            cache[1][key] = scalars()
        return cache[1][key]

    def update_step(self, gradient, variable, learning_rate):
        """Decoupled weight decay, then one fused ``ResourceApplyAdam`` kernel per variable.

        Same arithmetic as Keras' AdamW (decay ``var -= var * wd * lr``, then Adam with the bias-corrected
        step ``lr * sqrt(1 - b2^t) / (1 - b1^t)``), but 3 graph ops per variable instead of ~50: tracing
        the first training step of EfficientNetB0 spent ~10 s building Keras' per-variable update ops.
        """
        m = self._multiplier(variable)
        if not self._fused():
            return super().update_step(gradient, variable, learning_rate * m if m != 1.0 else learning_rate)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        c = self._step_scalars(dtype, m)
        if self.weight_decay and self._use_weight_decay(self._trainable_variables[index]):
            # var -= decay * var, as one kernel (the same multiply and subtract as assign_sub(var * decay))
            tf.raw_ops.ResourceApplyGradientDescent(var=variable.handle, alpha=c["decay"],
                                                    delta=tf.convert_to_tensor(variable), use_locking=False)
        momentum, velocity = self._momentums[index].value, self._velocities[index].value
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=momentum.handle, v=velocity.handle, beta1_power=c["beta_1_power"],
            beta2_power=c["beta_2_power"], lr=c["lr"], beta1=c["beta_1"], beta2=c["beta_2"],
            epsilon=c["epsilon"], grad=tf.cast(gradient, dtype), use_locking=False)

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or self._fused():
            return  # the fused update_step applies the decay itself
        if not self.lr_multipliers:
            return super()._apply_weight_decay(variables)

        def apply(distribution, variables):
            for variable in variables:
                if not self._use_weight_decay(variable):
                    continue
                m = self._multiplier(variable)

                def decay(var, m=m):
                    lr = tf.cast(self.learning_rate, var.dtype) * m
                    var.assign_sub(var * tf.cast(self.weight_decay, var.dtype) * lr)

                value = variable.value if isinstance(variable, keras.Variable) else variable
                distribution.extended.update(value, decay, group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(apply, self._distribution_strategy, variables)

    # --- clip after the cross-replica sum, not before (Keras 3 clips per replica) ---
    def _clip_gradients(self, grads):
        if _in_multi_replica_context():
            grads = list(grads)
            present = [i for i, g in enumerate(grads) if g is not None]
            if present:
                summed = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
                for i, g in zip(present, summed):
                    grads[i] = g
        if fast() and self.global_clipnorm and self.global_clipnorm > 0 and not self.clipnorm:
            return clip_by_global_norm(grads, self.global_clipnorm)
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # Already summed across replicas in _clip_gradients, which always runs first.
        return list(grads_and_vars)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}
