"""Leave-one-survey-out transfer: how well encoders adapt to a real survey they never saw, with few labels.

    python benchmarks/transfer.py --work /path/to/scratch [--sizes 100,300,1000] [--seeds 0,1,2]

For each real set S in ../shared/data (GZ1 SDSS: 6 classes; the Kaggle GZ2 spiral flag; DECaLS rings):
1. pretrain the candidate encoder without S: the GZ-Evo-mini catalog of every other campaign
   (training/evo_mini/make_catalog.py --exclude S, with synthetic votes) and ``zoobot-tf train`` on it
   with exactly the arguments of ``PRETRAIN`` (the shipped encoder's recipe; its card says so);
2. finetune on 100 / 300 / 1000 labels of S (or all, where fewer), 3 seeds (each draws its own labelled
   galaxies and initialisation), from (a) a randomly initialised encoder of the same architecture, (b) the
   previous embedded encoder (synthetic galaxies only) and (c) the candidate pretrained without S, all with
   zoobot-tf's finetuning defaults (only the survey's crop and flip given), scoring S's fixed test split
   (benchmarks/finetune_real.py's: never used for training, early stopping or choices);
3. write the table (mean and spread over seeds) and the plot: benchmarks/results/transfer.{json,md,png}.
Every pretraining and every finetuning row is kept in --work, so an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from finetune_real import SETS, load_set, run_one  # noqa: E402

# the candidate's pretraining (the shipped encoder is the same command on the catalog of every set)
PRETRAIN = ["--backbone", "resnet_micro", "--image_size", "96", "--channels", "3", "--flip", "false",
            "--epochs", "10", "--patience", "4", "--batch_size", "64", "--learning_rate", "1e-3"]
SYNTHETIC = 20000
ENCODERS = ("random init", "embedded v1 (synthetic only)", "GZ-Evo-mini without the scored set")
SIZES = (100, 300, 1000)


def pretrain_without(name: str, work: Path, shared: Path, synthetic: int = SYNTHETIC, extra: tuple = ()) -> Path:
    """The candidate encoder pretrained on every campaign but ``name`` (made once, then reused)."""
    model = work / f"pretrain_without_{name}" / "model.keras"
    if model.exists():
        return model
    catalog = work / f"evo_without_{name}"
    if not (catalog / "catalog.csv").exists():
        subprocess.run([sys.executable, str(REPO / "training" / "evo_mini" / "make_catalog.py"), "--out", str(catalog),
                        "--shared", str(shared), "--exclude", name, "--synthetic", str(synthetic)], check=True)
    subprocess.run([sys.executable, "-m", "zoobot_tf.cli", "train", "--catalog", str(catalog / "catalog.csv"),
                    "--schema", str(catalog / "schema.yaml"), "--output_dir", str(model.parent), "--progress",
                    "false", *PRETRAIN, *extra], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return model


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
    axes[0][0].set_ylabel("balanced accuracy (test, mean +- std over seeds)")
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
    p.add_argument("--synthetic", type=int, default=SYNTHETIC, help="synthetic galaxies in each pretraining catalog")
    p.add_argument("--pretrain_extra", default="", help="arguments appended to PRETRAIN (a smoke test: '--epochs 1')")
    p.add_argument("--out", default=str(HERE / "results" / "transfer"))
    args = p.parse_args(argv)
    work, shared = Path(args.work), Path(args.shared)
    work.mkdir(parents=True, exist_ok=True)
    rows_csv = work / "rows.csv"
    rows = pd.read_csv(rows_csv) if rows_csv.exists() else pd.DataFrame()
    done = set() if rows.empty else set(zip(rows["dataset"], rows["labels"], rows["seed"], rows["encoder"]))
    pretrain = PRETRAIN + args.pretrain_extra.split()
    last = {flag: value for flag, value in zip(pretrain[::2], pretrain[1::2])}  # a later flag wins, as in argparse
    arch = {"image_size": int(last["--image_size"]), "channels": int(last["--channels"])}
    for name in args.sets.split(","):
        pool, test, _ = load_set(shared, name)
        candidate = pretrain_without(name, work, shared, args.synthetic, tuple(args.pretrain_extra.split()))
        encoders = {ENCODERS[0]: ("resnet_micro", arch), ENCODERS[1]: (args.previous, None),
                    ENCODERS[2]: (str(candidate), None)}
        for n in sorted({min(int(v), len(pool)) for v in args.sizes.split(",")}):
            for seed in map(int, args.seeds.split(",")):
                for enc, (source, random_kwargs) in encoders.items():
                    if (name, n, seed, enc) in done:
                        continue
                    r = run_one(source, pool, test, n, SETS[name][4], SETS[name][5], seed=seed, recipe=None,
                                random_kwargs=random_kwargs)
                    r.update(dataset=name, labels=n, encoder=enc)
                    rows = pd.concat([rows, pd.DataFrame([r])], ignore_index=True)
                    rows.to_csv(rows_csv, index=False)
                    print(f"{name:18s} {n:5d} labels seed {seed} {enc:36s} bal.acc {r['balanced_accuracy']:.3f} "
                          f"({r['epochs']} epochs, {r['seconds']:.0f} s)", flush=True)
    summary = summarise(rows)
    text = markdown(summary)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"pretrain": pretrain,
                                                    "synthetic": args.synthetic,
                                                    "rows": rows.to_dict(orient="records")}, indent=2))
    plot(summary, out.with_suffix(".png"))
    print(f"wrote {out}.md/.json/.png")


if __name__ == "__main__":
    main()
