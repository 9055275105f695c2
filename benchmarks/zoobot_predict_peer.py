"""Optional: Zoobot v2's own end-to-end predictions (folder of JPEGs -> CSV), timed as benchmarks/predict.py
times zoobot-tf's, so the ratio comes from one session.

    /path/to/zoobot-venv/bin/python benchmarks/zoobot_predict_peer.py [--data DIR] [--n 512]

Needs ``pip install torch==2.14.1 torchvision==0.29.1 'zoobot[pytorch]==2.9.0'`` (not TensorFlow);
skips with a message when zoobot is missing. Runs ``zoobot.pytorch.predictions.predict_on_catalog.predict``
with a ``ZoobotTree`` EfficientNetB0 (random weights: speed does not depend on them), 1 channel,
224 px, GZ DECaLS DR5's 34 answers, batch 32, the greyscale + centre-crop inference transform of
galaxy-datasets (``fast_view_config``), Lightning on CPU. The DataLoader's worker count is swept
(0, 1, 2) and the fastest is reported, so the peer gets its best setting on these 2 cores.
Writes benchmarks/results/zoobot_predict_peer.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gz2_kaggle_spiral" / "images"))
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "zoobot_predict_peer.json"))
    args = p.parse_args(argv)
    try:
        import pandas as pd
        import torch
        from galaxy_datasets.shared import label_metadata
        from galaxy_datasets.transforms import fast_view_config, get_galaxy_transform
        from zoobot.pytorch.estimators import define_model
        from zoobot.pytorch.predictions import predict_on_catalog
    except ImportError as e:
        print(f"skipped: the Zoobot peer needs zoobot[pytorch] ({e})")
        return 0
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    files = sorted(Path(args.data).glob("*.jp*g"))[: args.n]
    if not files:
        print(f"skipped: no JPEGs in {args.data}")
        return 0
    catalog = pd.DataFrame({"id_str": [f.stem for f in files], "file_loc": [str(f) for f in files]})
    pairs, deps = label_metadata.decals_dr5_ortho_pairs, label_metadata.decals_ortho_dependencies
    label_cols = label_metadata.decals_dr5_ortho_label_cols
    class Tree(define_model.ZoobotTree):
        # galaxy-datasets 0.0.25 (the version zoobot 2.9.0 requires) yields {"image": ..., "id_str": ...}
        # batches, which ZoobotTree.predict_step passes to forward unchanged; take the image
        def predict_step(self, batch, batch_idx, dataloader_idx=0):
            return self(batch["image"] if isinstance(batch, dict) else batch)

    torch.manual_seed(0)
    model = Tree(output_dim=len(label_cols), question_answer_pairs=pairs, dependencies=deps,
                                    architecture_name="efficientnet_b0", channels=1)
    cfg = fast_view_config()
    cfg.greyscale = True
    transform = get_galaxy_transform(cfg)
    trainer_kwargs = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                          enable_model_summary=False)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in map(int, args.workers.split(",")):
            dm = dict(batch_size=32, num_workers=workers)
            if workers == 0:
                dm["prefetch_factor"] = None
            predict_on_catalog.predict(catalog.iloc[:64], model, str(Path(tmp) / "warm.csv"), label_cols, transform,
                                       datamodule_kwargs=dm, trainer_kwargs=trainer_kwargs)
            t = time.perf_counter()
            out = predict_on_catalog.predict(catalog, model, str(Path(tmp) / "p.csv"), label_cols, transform,
                                             datamodule_kwargs=dm, trainer_kwargs=trainer_kwargs)
            rates[workers] = len(files) / (time.perf_counter() - t)
            assert len(pd.read_csv(Path(tmp) / "p.csv")) == len(files), out
            print(f"zoobot {workers} workers: {rates[workers]:.1f} img/s", flush=True)
    best = max(rates, key=rates.get)
    result = {"model": "zoobot ZoobotTree efficientnet_b0 224px 1ch", "images": len(files), "batch": 32,
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              "folder_to_table_img_s_by_workers": {str(k): v for k, v in rates.items()},
              "best_workers": best, "folder_to_table_img_s": rates[best]}
    print(f"Zoobot v2 folder -> table: {rates[best]:.1f} img/s (best of workers {args.workers})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
