"""A shorter first step (less work before ``fit``, ``evaluate`` or ``predict`` runs its first batch), and
how inference functions are called.

Three fast paths (each behind :func:`zoobot_tf.ops.fast`, each against TensorFlow's and Keras' defaults):

* Grappler, the graph optimizer that runs when a traced step is first called, runs one round of its
  passes instead of two and without its memory optimizer (:func:`lean_grappler`). On this CPU that
  took Grappler from 2.0-2.9 s to 0.75-1.0 s for EfficientNetB0's training step with the same later
  step time and peak memory (``benchmarks/first_step.py``): the second round finds little after the
  first, and the memory optimizer's swapping and recomputation heuristics are for accelerators. The
  setting applies, on the calling thread only, to the calls of this model's train, test and predict
  functions; nothing else in the process sees it.
* Under a distribution strategy (``zoobot-tf train`` and ``finetune`` build the model under one) Keras 3
  builds the compiled loss and metrics before the first step by tracing the whole model symbolically
  (``compute_output_spec``), a forward trace that is thrown away. A functional model that is already
  built knows its output shapes, so :class:`FastStart` builds the loss and metrics from them
  (``Model._symbolic_build``; the metrics and loss are still traced symbolically, on those shapes).
* Inference functions (Keras' predict function on one replica, and the functions ``predict``, ``embed``
  and ``evaluate`` trace once per model, :mod:`zoobot_tf.models.traced`) run their ops one after another
  on the calling thread (TensorFlow's single-threaded executor, :func:`inference_calls`): a forward pass
  is one chain of layers, and TensorFlow's two inter-op threads gained nothing there but raised the
  memory peak at the same rate (224 px, batch 32, interleaved A/B: ConvNeXt-Nano ``mixed_bfloat16``
  1,250-1,255 -> 1,176-1,179 MB, ConvNeXt-Tiny float32 1,378-1,383 -> 1,308-1,315; the performance
  guide's "Inference memory" has every model). The layers' own kernels keep their intra-op threads.
"""
from __future__ import annotations

import contextlib
import functools

import keras
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2

from zoobot_tf.ops import fast

try:  # TensorFlow internals; without them the stock configuration is used (selfcheck reports it)
    from tensorflow.python.eager import context as _context
except ImportError:  # pragma: no cover
    _context = None


@functools.lru_cache(maxsize=8)
def _lean_config(serialized: bytes | None) -> config_pb2.ConfigProto:
    config = config_pb2.ConfigProto()
    if serialized:
        config.ParseFromString(serialized)
    rewrite = config.graph_options.rewrite_options
    rewrite.meta_optimizer_iterations = rewriter_config_pb2.RewriterConfig.ONE
    rewrite.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    return config


SEQUENTIAL = "SINGLE_THREADED_EXECUTOR"  # TensorFlow's executor that runs a function's ops in order, in the caller


@contextlib.contextmanager
def lean_grappler(executor_type: str | None = None):
    """Functions first called inside this block (on this thread) get the lean Grappler configuration,
    and ``executor_type`` (TensorFlow's name of an executor) when given.

    A traced function keeps the configuration of its first call; call it under the same setting every
    time, or TensorFlow instantiates (and optimizes) it again.
    """
    if _context is None or not fast():
        yield
        return
    ctx = _context.context()
    previous = ctx.function_call_options
    options = _context.FunctionCallOptions(executor_type=executor_type or previous.executor_type,
                                           config_proto=_lean_config(previous.config_proto_serialized))
    ctx.function_call_options = options
    try:
        yield
    finally:
        ctx.function_call_options = previous


def inference_calls():
    """The block's function calls get the lean Grappler configuration and run their ops in order on the
    calling thread (for inference: one process, one replica; collectives need the default executor)."""
    return lean_grappler(SEQUENTIAL)


class _Under:
    """``function``, called inside ``block()``; its other attributes (a tf.function's tracing count) as is."""

    def __init__(self, function, block):
        self._function, self._block = function, block

    def __call__(self, *args, **kwargs):
        with self._block():
            return self._function(*args, **kwargs)

    def __getattr__(self, name):  # only for names not found on the wrapper itself
        if name.startswith("__") or name in ("_function", "_block"):  # copy and pickle probe before __init__
            raise AttributeError(name)
        return getattr(self._function, name)


def under(function, block):
    """``function`` called inside the context manager ``block()`` each time (None stays None)."""
    if function is None or isinstance(function, _Under):
        return function
    return _Under(function, block)


class FastStart:
    """Mixin for ``keras.Model`` subclasses: the two fast paths above."""

    def make_train_function(self, force=False):
        super().make_train_function(force)
        self.train_function = under(self.train_function, lean_grappler)
        return self.train_function

    def make_test_function(self, force=False):
        super().make_test_function(force)
        self.test_function = under(self.test_function, lean_grappler)
        return self.test_function

    def make_predict_function(self, force=False):
        super().make_predict_function(force)
        one_replica = self.distribute_strategy.num_replicas_in_sync == 1
        self.predict_function = under(self.predict_function, inference_calls if one_replica else lean_grappler)
        return self.predict_function

    def _symbolic_build(self, iterator=None, data_batch=None):
        if fast() and data_batch is not None and self._built_functional():
            self._build_compiled_from_outputs(data_batch)
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    def _built_functional(self) -> bool:
        return bool(getattr(self, "outputs", None)) and all(layer.built for layer in self._flatten_layers())

    def _build_compiled_from_outputs(self, data_batch) -> None:
        from keras.src import backend, tree
        from keras.src.trainers.data_adapters import data_adapter_utils

        def spec(v, shape=None):
            return None if v is None else keras.KerasTensor(v.shape if shape is None else shape,
                                                            backend.standardize_dtype(v.dtype))

        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(tree.map_structure(spec, data_batch))
        batch = next(v for v in tree.flatten(x) if v is not None).shape[0]
        y_pred = tree.pack_sequence_as(self._outputs_struct, [
            spec(o, (batch, *o.shape[1:])) for o in tree.flatten(self._outputs_struct)])
        if self._compile_metrics is not None and not self._compile_metrics.built:
            backend.compute_output_spec(self.compute_metrics, x, y, y_pred, sample_weight=sample_weight)
        if self._compile_loss is not None and not self._compile_loss.built:
            backend.compute_output_spec(self._compute_loss, x, y, y_pred, sample_weight=sample_weight,
                                        training=False)
