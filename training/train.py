"""Train a Zoobot model (absl script). Flags are the fields of zoobot_tf.training.TrainConfig.

    python training/train.py --output_dir runs/demo
    python training/train.py --shards data/shards --backbone convnext_nano --image_size 224 \
        --strategy mirrored --epochs 100 --output_dir runs/nano

Equivalent to `zoobot-tf train`; run the same command again to resume an interrupted run.
"""
import dataclasses
import json
import typing

from absl import app, flags

from zoobot_tf.training import TrainConfig, train

_HINTS = typing.get_type_hints(TrainConfig)
for _field in dataclasses.fields(TrainConfig):
    _base = next((a for a in typing.get_args(_HINTS[_field.name]) if a is not type(None)), _HINTS[_field.name])
    _define = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer, float: flags.DEFINE_float}.get(
        _base, flags.DEFINE_string)
    _define(_field.name, _field.default, f"TrainConfig.{_field.name}")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)}
    if values.get("backbone_kwargs"):
        values["backbone_kwargs"] = json.loads(values["backbone_kwargs"])
    config = TrainConfig(**values)
    result = train(config)
    total = result.metrics.iloc[-1]
    print(f"test loss {total['loss']:.3f} (baseline {total['baseline_loss']:.3f}) in {result.output_dir}")


if __name__ == "__main__":
    app.run(main)
