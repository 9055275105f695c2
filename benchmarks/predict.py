"""End-to-end prediction throughput: a folder of real JPEGs -> table (decode, model, MC samples, writing),
and the exported SavedModel's bytes signature.

    python benchmarks/predict.py [--data ../shared/data/gz2_kaggle_spiral/images] [--n 512]

Models: EfficientNetB0 at 224 px greyscale (the size of the Zoobot comparison; random weights, speed
does not depend on them) in float32 and in mixed_bfloat16 (``predict --precision``), and the embedded
64 px model, each with 1 and 5 MC-dropout forward passes.
Zoobot's own folder -> table rate on the same folder: benchmarks/zoobot_predict_peer.py.
"""
import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]


def _b0(precision=None):
    from zoobot_tf.models import Zoobot

    return Zoobot(backbone="efficientnet_b0", image_size=224, channels=1, precision=precision)


def _embedded():
    from zoobot_tf.finetuning import load_model

    return load_model(REPO / "saved_models" / "zoobot_synthetic")


# key -> (name in the results, the model); random weights for EfficientNetB0: speed does not depend on them
MODELS = {"efficientnet_b0": lambda: ("efficientnet_b0 224px", _b0()),
          "efficientnet_b0_bf16": lambda: ("efficientnet_b0 224px bf16", _b0("mixed_bfloat16")),
          "embedded": lambda: ("embedded resnet_micro 64px", _embedded())}


def main(argv=None):
    from zoobot_tf.export import export_model
    from zoobot_tf.predictions import predict

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gz2_kaggle_spiral" / "images"))
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--samples", default="1,5", help="MC-dropout forward passes per galaxy, comma-separated")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel bytes signature")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predict.json"))
    args = p.parse_args(argv)
    files = sorted(Path(args.data).glob("*.jp*g"))[: args.n]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for f in files:
            shutil.copy(f, folder / f.name)
        for key in args.models.split(","):
            name, model = MODELS[key]()
            folder_rates = {}
            for n_samples in map(int, args.samples.split(",")):
                predict(model, folder, Path(tmp) / "warm.csv", n_samples=n_samples, progress=False)  # tracing
                t = time.perf_counter()
                predict(model, folder, Path(tmp) / "p.csv", n_samples=n_samples, progress=False)
                folder_rates[n_samples] = len(files) / (time.perf_counter() - t)
            results.append({"model": name, "images": len(files),
                            "folder_to_table_img_s": {str(k): v for k, v in folder_rates.items()}})
            rates = "  ".join(f"{k} pass{'es' if k > 1 else ''} {v:6.1f}" for k, v in folder_rates.items())
            print(f"{name:28s} folder -> table img/s: {rates}", flush=True)
            if args.no_export:
                continue
            export = export_model(model, Path(tmp) / "export", name="m")
            loaded = tf.saved_model.load(str(export))
            images = [f.read_bytes() for f in files]
            sig = loaded.signatures["serving_default"]
            sig(image_bytes=tf.constant(images[:32]))
            t = time.perf_counter()
            for i in range(0, len(images), 32):
                sig(image_bytes=tf.constant(images[i:i + 32]))
            export_rate = len(images) / (time.perf_counter() - t)
            results[-1]["savedmodel_bytes_img_s"] = export_rate
            print(f"{name:28s} SavedModel bytes signature {export_rate:7.1f} img/s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
