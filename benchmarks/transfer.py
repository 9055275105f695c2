"""Leave-one-survey-out transfer: how well encoders adapt to a real survey they never saw, with few labels.

    python benchmarks/transfer.py --work /path/to/scratch [--sizes 100,300,1000] [--seeds 0,1,2]

For each real set S in ../shared/data (GZ1 SDSS: 6 classes; the Kaggle GZ2 spiral flag; DECaLS rings):
1. pretrain the candidate encoder without S: the GZ-Evo-mini catalog of every other campaign
   (training/evo_mini/make_catalog.py --exclude S, real galaxies only, without any galaxy a benchmark
   scores on) and ``zoobot-tf train`` on it
   with exactly the arguments of ``PRETRAIN`` (training/evo_mini/README.md's recipe);
2. finetune on 100 / 300 / 1000 labels of S (or all, where fewer), 3 seeds (each draws its own labelled
   galaxies and initialisation), from (a) a randomly initialised encoder of the same architecture, (b) the
   previous embedded encoder (synthetic galaxies only) and (c) the candidate pretrained without S, all with
   zoobot-tf's finetuning defaults (only the survey's crop and flip given), scoring S's fixed test split
   (benchmarks/finetune_real.py's: never used for training, early stopping or choices); and, for what a
   user of S's survey would get, (d) ``--with_pool``: the encoder pretrained on every set's pool (training/
   evo_mini/README.md's commands; not shipped, see there), when given;
3. write the table (mean and spread over seeds) and the plot: benchmarks/results/transfer.{json,md,png}
   (and the plot into docs/assets for the documentation site).
The candidates carry the finetuning card chosen for the encoder pretrained on every pool (``--card``,
training/evo_mini/README.md), as a shipped encoder would. Pretrained encoders are kept in --work; every finetuning
row is kept in the repository (benchmarks/results/transfer_rows.csv), so a run interrupted or continued on
another machine resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_real import SETS, load_set, run_one  # noqa: E402

from zoobot_tf.scaling import append_rows  # noqa: E402

# the candidate's pretraining: training/evo_mini/README.md's recipe, on the catalog without the scored set
PRETRAIN = ["--backbone", "resnet_micro", "--image_size", "96", "--channels", "3", "--flip", "false",
            "--epochs", "15", "--patience", "5", "--batch_size", "64", "--learning_rate", "1e-3",
            "--lr_schedule", "cosine", "--warmup_steps", "200", "--galaxy_cards", "false"]
# its card, chosen on held-out galaxies (benchmarks/results/card_zoobot_evo_mini.json)
CARD = {"n_blocks": -1, "learning_rate": 1e-3}
SYNTHETIC = 0  # real galaxies only: synthetic votes hurt the transfer (training/evo_mini/README.md)
ENCODERS = ("random init", "embedded v1 (synthetic only)", "GZ-Evo-mini without the scored set",
            "GZ-Evo-mini with the set's pool")
SIZES = (100, 300, 1000)


def pretrain_without(name: str, work: Path, shared: Path, synthetic: int = SYNTHETIC, extra: tuple = (),
                     card: dict | None = None) -> Path:
    """The candidate encoder pretrained on every campaign but ``name`` (made once, then reused): its export,
    carrying the finetuning ``card`` (written again on reuse, so the export finetunes with the card that
    its rows record)."""
    model = work / f"pretrain_without_{name}" / "model.keras"
    export = model.parent / "export" / "zoobot"
    if not model.exists():
        catalog = work / f"evo_without_{name}"
        if not (catalog / "catalog.csv").exists():
            ids = work / "scored_ids.txt"  # no benchmark's scoring galaxies, of any set, in any pretraining
            subprocess.run([sys.executable, str(HERE / "embedded_card.py"), "--data", str(shared),
                            "--write_ids", str(ids)], check=True)
            subprocess.run([sys.executable, str(REPO / "training" / "evo_mini" / "make_catalog.py"), "--out",
                            str(catalog), "--shared", str(shared), "--exclude", name, "--synthetic", str(synthetic),
                            "--exclude_ids", str(ids)], check=True)
        subprocess.run([sys.executable, "-m", "zoobot_tf.cli", "train", "--catalog", str(catalog / "catalog.csv"),
                        "--schema", str(catalog / "schema.yaml"), "--output_dir", str(model.parent), "--progress",
                        "false", *PRETRAIN, *extra], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if card:
        from zoobot_tf.export import update_export

        update_export(export, config={"finetuning": card}, metadata={"finetuning": card})
    return export


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    g = rows.groupby(["dataset", "labels", "encoder"], sort=False)["balanced_accuracy"]
    return g.agg(mean="mean", std="std", seeds="count").reset_index()


def markdown(summary: pd.DataFrame) -> str:
    lines = ["| set | labels | " + " | ".join(ENCODERS) + " |", "|---|---|" + "---|" * len(ENCODERS)]
    for (name, n), part in summary.groupby(["dataset", "labels"], sort=False):
        cells = []
        for enc in ENCODERS:
            r = part[part["encoder"] == enc]
            cells.append(f"{r['mean'].iloc[0]:.3f} +- {r['std'].iloc[0]:.3f}" if len(r) else "")
        lines.append(f"| {name} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(summary: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for enc in ENCODERS:
            r = summary[(summary["dataset"] == name) & (summary["encoder"] == enc)]
            ax.errorbar(r["labels"], r["mean"], yerr=r["std"], marker="o", capsize=3, label=enc)
        ax.set_xscale("log")
        ax.set_xlabel("finetuning labels")
        ax.set_title(name)
    axes[0][0].set_ylabel("balanced accuracy (test split)")
    fig.suptitle("mean +- sd over 3 seeds", fontsize=9)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="scratch folder: catalogs, pretrained encoders, rows.csv")
    p.add_argument("--shared", default=os.environ.get("ZOOBOT_TF_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--previous", default=str(REPO / "saved_models" / "zoobot_synthetic"),
                   help="the previous embedded encoder (b)")
    p.add_argument("--with_pool", default=None, help="export of the encoder pretrained on every set's pool (d)")
    p.add_argument("--synthetic", type=int, default=SYNTHETIC, help="synthetic galaxies in each pretraining catalog")
    p.add_argument("--pretrain_extra", default="", help="arguments appended to PRETRAIN (a smoke test: '--epochs 1')")
    p.add_argument("--card", default=json.dumps(CARD), help="the candidates' finetuning card (JSON)")
    p.add_argument("--out", default=str(HERE / "results" / "transfer"))
    p.add_argument("--docs_plot", default=str(REPO / "docs" / "assets" / "transfer.png"),
                   help="a copy of the plot for the documentation site ('' for none)")
    p.add_argument("--rows", default=str(HERE / "results" / "transfer_rows.csv"), help="every finetuning row")
    args = p.parse_args(argv)
    work, shared = Path(args.work), Path(args.shared)
    work.mkdir(parents=True, exist_ok=True)
    card = json.loads(args.card)
    rows_csv = Path(args.rows)
    rows = pd.read_csv(rows_csv) if rows_csv.exists() else pd.DataFrame()
    done = set() if rows.empty else set(zip(rows["dataset"], rows["labels"], rows["seed"], rows["encoder"]))
    pretrain = PRETRAIN + args.pretrain_extra.split()
    last = {flag: value for flag, value in zip(pretrain[::2], pretrain[1::2])}  # a later flag wins, as in argparse
    arch = {"image_size": int(last["--image_size"]), "channels": int(last["--channels"])}
    for name in args.sets.split(","):
        pool, test, _ = load_set(shared, name)
        candidate = pretrain_without(name, work, shared, args.synthetic, tuple(args.pretrain_extra.split()), card)
        encoders = {ENCODERS[0]: ("resnet_micro", arch), ENCODERS[1]: (args.previous, None),
                    ENCODERS[2]: (str(candidate), None)}
        if args.with_pool:
            encoders[ENCODERS[3]] = (args.with_pool, None)
        for n in sorted({min(int(v), len(pool)) for v in args.sizes.split(",")}):
            for seed in map(int, args.seeds.split(",")):
                for enc, (source, random_kwargs) in encoders.items():
                    if (name, n, seed, enc) in done:
                        continue
                    r = run_one(source, pool, test, n, SETS[name][4], SETS[name][5], seed=seed, recipe=None,
                                random_kwargs=random_kwargs)
                    r.update(dataset=name, labels=n, encoder=enc,
                             candidate_card=json.dumps(card) if enc in ENCODERS[2:] else "")
                    append_rows(rows_csv.parent, pd.DataFrame([r]), rows_csv.name)  # runs on other sets may share it
                    print(f"{name:18s} {n:5d} labels seed {seed} {enc:36s} bal.acc {r['balanced_accuracy']:.3f} "
                          f"({r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    rows = pd.read_csv(rows_csv)
    summary = summarise(rows)
    text = markdown(summary)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"pretrain": pretrain,
                                                    "synthetic": args.synthetic, "card": card,
                                                    "rows": rows.to_dict(orient="records")}, indent=2))
    plot(summary, out.with_suffix(".png"))
    if args.docs_plot:
        shutil.copyfile(out.with_suffix(".png"), args.docs_plot)
    print(f"wrote {out}.md/.json/.png")


if __name__ == "__main__":
    main()
