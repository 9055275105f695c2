"""Calibrate the embedded model's credible intervals (it was trained before ``zoobot-tf train`` did so itself).

    python training/calibrate_embedded.py

Fits the per-question concentration scale with ``zoobot_tf.calibrate`` on the votes of 2,000 synthetic
galaxies of seed 2 (not the model's training galaxies, seed 0, nor benchmarks/calibration.py's test
galaxies, seed 1) and writes it into saved_models/zoobot_synthetic/1/assets.extra: the task config inside
model.keras and ``task_config`` in zoobot_metadata.json. The weights and the SavedModel are not touched.
"""
import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import zoobot_tf as zt

ASSETS = Path(__file__).resolve().parents[1] / "saved_models" / "zoobot_synthetic" / "1" / "assets.extra"


def main():
    model = zt.load_model(ASSETS / "model.keras")
    model.task.concentration_scale = None
    with tempfile.TemporaryDirectory() as tmp:
        held_out = zt.make_synthetic_catalog(2000, Path(tmp) / "held_out", stored_size=model.load_size, seed=2,
                                             schema=model.schema, progress=False)
        scale = [float(v) for v in zt.calibrate(model, held_out.assign(split="val"))]
        task_config = {"name": "votes", "schema": model.schema.to_dict(), "concentration_scale": scale}
        patched = Path(tmp) / "model.keras"
        with zipfile.ZipFile(ASSETS / "model.keras") as src, zipfile.ZipFile(patched, "w") as dst:
            for item in src.infolist():
                data = src.read(item.filename)
                if item.filename == "config.json":
                    config = json.loads(data)
                    config["config"]["task"] = task_config
                    config["config"].pop("schema", None)
                    data = json.dumps(config).encode()
                dst.writestr(item, data)
        shutil.copy(patched, ASSETS / "model.keras")
    meta_path = ASSETS / "zoobot_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["task_config"] = task_config
    meta_path.write_text(json.dumps(meta, indent=2))
    print({q: round(v, 3) for q, v in zip(model.schema.question_names, scale)})
    assert zt.load_model("zoobot_synthetic").task.concentration_scale == scale


if __name__ == "__main__":
    main()
