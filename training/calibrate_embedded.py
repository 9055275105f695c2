"""Calibrate the embedded model's credible intervals (it was trained before ``zoobot-tf train`` did so itself).

    python training/calibrate_embedded.py

Fits the per-question concentration scale with ``zoobot_tf.calibrate`` on the votes of 2,000 synthetic
galaxies of seed 2 (not the model's training galaxies, seed 0, nor benchmarks/calibration.py's test
galaxies, seed 1) and writes it into saved_models/zoobot_synthetic/1/assets.extra: the task config inside
model.keras and ``task_config`` in zoobot_metadata.json. The weights and the SavedModel are not touched.
"""
import tempfile
from pathlib import Path

import zoobot_tf as zt
from zoobot_tf.export import update_export

ASSETS = Path(__file__).resolve().parents[1] / "saved_models" / "zoobot_synthetic" / "1" / "assets.extra"


def main():
    model = zt.load_model(ASSETS / "model.keras")
    model.task.concentration_scale = None
    with tempfile.TemporaryDirectory() as tmp:
        held_out = zt.make_synthetic_catalog(2000, Path(tmp) / "held_out", stored_size=model.load_size, seed=2,
                                             schema=model.schema, progress=False)
        scale = [float(v) for v in zt.calibrate(model, held_out.assign(split="val"))]
        task_config = {"name": "votes", "schema": model.schema.to_dict(), "concentration_scale": scale}
    update_export(ASSETS.parent, config={"task": task_config, "schema": None}, metadata={"task_config": task_config})
    print({q: round(v, 3) for q, v in zip(model.schema.question_names, scale)})
    assert zt.load_model("zoobot_synthetic").task.concentration_scale == scale


if __name__ == "__main__":
    main()
