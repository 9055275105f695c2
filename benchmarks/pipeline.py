"""Input pipeline throughput on real JPEGs: read + decode, + the model's augmentation, and feeding training.

    python benchmarks/pipeline.py [--data ../shared/data/gz2_kaggle_spiral] [--out benchmarks/results/pipeline.json]

Writes the 424x424 Kaggle GZ2 JPEGs (as-is bytes) into TFRecord shards, then measures, at 224 px,
batch 32, on this machine's cores:
* read_decode: shards -> decoded, resized float images (the tf.data pipeline alone);
* read_decode_augment: the same plus the model's training view (greyscale, rotation by any angle,
  flips, random resized crop) run batch by batch, as it runs inside a training step;
* train_consumption: EfficientNetB0 training images/s on constant data (what the pipeline must feed);
* train_from_pipeline: EfficientNetB0 training images/s fed by the real pipeline.
The pipeline must supply at least 3x the training consumption rate.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]


def rate(it, n_batches, batch):
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - t)


def main(argv=None):
    from zoobot_tf.data import tfrecords
    from zoobot_tf.models import GalaxyView, Zoobot
    from zoobot_tf.tasks import ClassificationTask

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gz2_kaggle_spiral"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pipeline.json"))
    p.add_argument("--batches", type=int, default=20)
    args = p.parse_args(argv)
    root = Path(args.data)
    labels = pd.read_csv(root / "labels.csv", dtype={"GalaxyID": str})
    cat = pd.DataFrame({"id_str": labels["GalaxyID"], "file_loc": [str(root / f) for f in labels["file"]],
                        "spiral": labels["spiral_flag"]})
    batch, size = 32, 224
    with tempfile.TemporaryDirectory() as tmp:
        tfrecords.write_shards(cat, Path(tmp) / "shards", task=ClassificationTask(["0", "1"]), label_cols=["spiral"],
                               splits={"train": 1.0}, progress=False, galaxies_per_shard=256)
        ds = tfrecords.shard_dataset(Path(tmp) / "shards", "train", batch, size, training=True, repeat=True,
                                     cache=False)
        decode = rate(iter(ds), args.batches, batch)
        view = GalaxyView(size, channels=1)
        augmented = iter(ds.map(lambda x, y, w: (view(x, training=True), y, w), num_parallel_calls=tf.data.AUTOTUNE)
                         .prefetch(tf.data.AUTOTUNE))
        decode_augment = rate(augmented, args.batches, batch)

        model = Zoobot(task="classification", n_classes=2, backbone="efficientnet_b0", image_size=size, channels=1)
        model.compile()
        x = tf.constant(np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32"))
        y = tf.constant(np.zeros(batch, np.int32))
        model.train_on_batch(x, y)
        steps = 6
        t = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        consumption = steps * batch / (time.perf_counter() - t)
        epoch_times = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: epoch_times.append(time.perf_counter()),
            on_epoch_end=lambda epoch, logs: epoch_times.__setitem__(-1, time.perf_counter() - epoch_times[-1]))
        # one fit call, so the iterator, its shuffle buffer and the traced step persist; epoch 1 warms up
        model.fit(ds, steps_per_epoch=steps, epochs=3, verbose=0, callbacks=[timer])
        fed = steps * batch / statistics.median(epoch_times[1:])
    result = {"images": len(cat), "image_size_source": 424, "image_size": size, "batch": batch,
              "read_decode_img_s": decode, "read_decode_augment_img_s": decode_augment,
              "train_consumption_img_s": consumption, "train_from_pipeline_img_s": fed,
              "pipeline_over_consumption": decode_augment / consumption}
    print(f"{'stage':32s} {'images/s':>10s}")
    for k in ("read_decode_img_s", "read_decode_augment_img_s", "train_consumption_img_s",
              "train_from_pipeline_img_s"):
        print(f"{k:32s} {result[k]:10.1f}")
    print(f"pipeline supplies {result['pipeline_over_consumption']:.1f}x what EfficientNetB0 training consumes")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
