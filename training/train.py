"""Train a Zoobot model (absl script). Flags are the fields of zoobot_tf.config.TrainConfig, the same
options as `zoobot-tf train` (one definition, checked the same way).

    python training/train.py --output_dir runs/demo
    python training/train.py --shards data/shards --backbone convnext_nano --image_size 224 \
        --strategy mirrored --epochs 100 --output_dir runs/nano

Run the same command again to resume an interrupted run.
"""
from absl import app

from zoobot_tf.config import TrainConfig
from zoobot_tf.training import train

TrainConfig.define_absl_flags()


def main(argv):
    del argv
    result = train(TrainConfig.from_absl_flags())
    total = result.metrics.iloc[-1]
    print(f"test loss {total['loss']:.3f} (baseline {total['baseline_loss']:.3f}) in {result.output_dir}")


if __name__ == "__main__":
    app.run(main)
