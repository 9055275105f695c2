"""Choose a packaged model's recommended finetuning settings (its card) on real galaxies, on validation
galaxies only.

    python benchmarks/embedded_card.py [--pretrained zoobot_synthetic] [--seeds 0,1] [--cards 0,1,2] [--write]
    python benchmarks/embedded_card.py --write_ids data/scored_ids.txt

For GZ1 SDSS (6 classes) and the Kaggle GZ2 spiral flag: a quarter of each set's labelled pool (the
galaxies benchmarks/finetune_real.py may train on; its test split is never read here) is held out for
scoring; 1,000 labels are drawn from the rest per seed, and ``zoobot_tf.finetune`` runs from the packaged
encoder with each candidate card, everything else left to its defaults but the survey's crop and flip.
Prints the balanced accuracy per set, card and seed, writes it as JSON in benchmarks/results and, with
``--write``, puts the card with the best mean balanced accuracy into the model (saved_models/<name> or the
export folder given; ``zoobot_tf.export.update_export``: the weights are not touched). ``--write_ids`` lists the galaxies scored
here and by benchmarks/finetune_real.py, which a pretraining must leave out (training/evo_mini).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_real import SETS, load_set, run_one  # noqa: E402

CARDS = {"none (Zoobot's defaults: head only, lr 1e-4)": {},
         "whole encoder, lr 3e-4": {"n_blocks": -1, "learning_rate": 3e-4},
         "whole encoder, lr 1e-3": {"n_blocks": -1, "learning_rate": 1e-3},
         "whole encoder, lr 1e-4": {"n_blocks": -1, "learning_rate": 1e-4},
         "whole encoder, lr 3e-4, up to 60 epochs": {"n_blocks": -1, "learning_rate": 3e-4, "epochs": 60},
         "whole encoder, lr 3e-4, up to 60 epochs, colour": {"n_blocks": -1, "learning_rate": 3e-4, "epochs": 60,
                                                             "channels": 3},
         "whole encoder, lr 3e-4, up to 60 epochs, 96 px": {"n_blocks": -1, "learning_rate": 3e-4, "epochs": 60,
                                                            "image_size": 96}}
HOLDOUT, HOLDOUT_SEED = 0.25, 123


def split_pool(data: Path, name: str, pool=None):
    """``(rest, holdout)``: a set's labelled pool (read unless given) less its held-out quarter, and that
    quarter."""
    if pool is None:
        pool, _test, _ = load_set(data, name)  # the test split stays unread
    holdout = pool.sample(frac=HOLDOUT, random_state=HOLDOUT_SEED)
    return pool.drop(holdout.index), holdout


def scored_ids(data: Path) -> list[str]:
    """Every galaxy a benchmark scores on (each set's test split and held-out quarter), as ``<set>-<id>``:
    the galaxies an encoder's pretraining must leave out (training/evo_mini/make_catalog.py --exclude_ids)."""
    ids = []
    for name in SETS:
        if (data / SETS[name][0]).exists():
            pool, test, _ = load_set(data, name)
            holdout = split_pool(data, name, pool)[1]
            ids += [f"{name}-{i}" for i in pd.concat([test, holdout])["id_str"]]
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--sets", default="gz1_sdss,gz2_kaggle_spiral")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--out", default=None, help="default: benchmarks/results/embedded_card.json for zoobot_synthetic, "
                   "card_<name>.json for another model")
    p.add_argument("--pretrained", default="zoobot_synthetic", help="the packaged model (or export) to choose for")
    p.add_argument("--cards", default=None, help="only these cards (comma-separated keys of CARDS' order: 0,1,2,3,4)")
    p.add_argument("--write", action="store_true", help="write the best card into --pretrained (a packaged model's "
                   "name or an export folder)")
    p.add_argument("--mirror_pairs", default=None, help="with --write: also write these class pairs a mirror "
                   "image swaps into the card (a:b[,c:d]; finetuning then uses those its classes have)")
    p.add_argument("--write_ids", default=None, help="only write the galaxies scored here and in finetune_real.py "
                   "to this file (for make_catalog.py --exclude_ids), then stop")
    args = p.parse_args(argv)
    if args.out is None:
        name = Path(args.pretrained).name
        args.out = str(HERE / "results" / ("embedded_card.json" if name == "zoobot_synthetic" else f"card_{name}.json"))
    if args.write_ids:
        ids = scored_ids(Path(args.data))
        tmp = Path(f"{args.write_ids}.{os.getpid()}.tmp")  # atomic: parallel benchmark runs write it too
        tmp.parent.mkdir(parents=True, exist_ok=True)  # data/ does not exist in a fresh checkout
        tmp.write_text("\n".join(ids) + "\n")
        os.replace(tmp, args.write_ids)
        print(f"wrote {len(ids)} galaxy ids to {args.write_ids}")
        return
    cards = CARDS if args.cards is None else {k: v for i, (k, v) in enumerate(CARDS.items())
                                              if str(i) in args.cards.split(",")}
    rows = []
    for name in args.sets.split(","):
        rest, holdout = split_pool(Path(args.data), name)
        for seed in map(int, args.seeds.split(",")):
            for card, settings in cards.items():
                r = run_one(args.pretrained, rest, holdout, args.labels, SETS[name][4], SETS[name][5], seed=seed,
                            recipe=settings or None)
                rows.append({"set": name, "card": card, **r})
                print(f"{name:18s} seed {seed}  {card:45s} balanced accuracy {r['balanced_accuracy']:.3f} "
                      f"({r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    table = pd.DataFrame(rows).pivot_table(index="card", columns="set", values="balanced_accuracy", aggfunc="mean")
    table["mean"] = table.mean(axis=1)
    print("\nmean balanced accuracy on the held-out part of each pool:\n" + table.round(3).to_string())
    best = table["mean"].idxmax()
    Path(args.out).write_text(json.dumps({"labels": args.labels, "holdout": HOLDOUT, "pretrained": args.pretrained,
                                          "cards": cards, "best": best, "rows": rows}, indent=1) + "\n")
    print(f"best: {best}; wrote {args.out}")
    if args.write:
        from zoobot_tf.export import update_export

        card = {**(cards[best] or {}), **({"mirror_pairs": args.mirror_pairs} if args.mirror_pairs else {})} or None
        target = Path(args.pretrained) if Path(args.pretrained).exists() else REPO / "saved_models" / args.pretrained
        update_export(target, config={"finetuning": card}, metadata={"finetuning": card})
        print(f"card {card} written into {target}")


if __name__ == "__main__":
    main()
