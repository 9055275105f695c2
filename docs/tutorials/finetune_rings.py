# %% [markdown]
# # Finetune a ring classifier
#
# Zoobot's example task: find ringed galaxies among GZ DECaLS images, from a few hundred labels. We
# finetune zoobot-tf's packaged encoder and compare it with the same recipe from a random encoder.
#
# The data are the 470 GZ DECaLS galaxies with a ring tag in `../shared/data/gz_decals_rings` (set
# `ZOOBOT_TF_SHARED_DATA` to their parent folder). Without them, this notebook makes a synthetic stand-in
# (edge-on discs among rendered galaxies), so it runs anywhere.

# %%
import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="zoobot-tf-tutorial-"))  # a scratch folder for what we write

# %%
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import zoobot_tf as zt

shared = Path(os.environ.get("ZOOBOT_TF_SHARED_DATA", "../shared/data")) / "gz_decals_rings"
if (shared / "labels.csv").exists():
    labels = pd.read_csv(shared / "labels.csv")
    catalog = pd.DataFrame({"id_str": labels["iauname"], "file_loc": [str(shared / f) for f in labels["file"]],
                            "ring": labels["ring"].map({0: "no_ring", 1: "ring"})})
    # the source's holdout galaxies are our test set; its dev galaxies are split into train and val
    dev = labels["split"] == "dev"
    catalog["split"] = np.where(dev, np.where(np.arange(len(labels)) % 5 == 0, "val", "train"), "test")
    crop = 0.7
else:
    synthetic = zt.make_synthetic_catalog(400, "synthetic_rings", progress=False)
    catalog = synthetic[["id_str", "file_loc"]].assign(
        ring=synthetic["true_edge_on"].map({True: "ring", False: "no_ring"}))
    crop = 1.0
print(catalog["ring"].value_counts().to_dict(), catalog.groupby("split").size().to_dict()
      if "split" in catalog else "")

# %% [markdown]
# ## Finetune
#
# `zt.finetune` splits the catalog (its `split` column here), weights the classes, trains with early
# stopping on the validation split and scores the test split, which chooses nothing. Settings left unset
# come from the pretrained model's card.

# %%
results = {}
for name, pretrained in [("packaged encoder", "zoobot_synthetic"), ("random encoder", "resnet_micro")]:
    result = zt.finetune(pretrained, catalog, label_cols="ring", epochs=12, crop_fraction=crop, verbose=0,
                         image_size=64 if pretrained == "resnet_micro" else None)
    results[name] = result
    total = result.test_table.iloc[-1]
    print(f"{name:17s} test accuracy {total['accuracy']:.3f}  balanced accuracy {total['balanced_accuracy']:.3f}")
print(results["packaged encoder"].settings)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for name, result in results.items():
    axes[0].plot(result.history["loss"], label=f"{name}, train")
    axes[0].plot(result.history["val_loss"], "--", label=f"{name}, validation")
    table = result.test_table.iloc[:-1]
    axes[1].bar(np.arange(len(table)) + (0.2 if name.startswith("random") else -0.2), table["recall"], width=0.4,
                label=name)
axes[0].set_xlabel("epoch"), axes[0].set_ylabel("loss"), axes[0].legend(fontsize=7)
axes[1].set_xticks(range(len(table)), table["question"]), axes[1].set_ylabel("test recall"), axes[1].legend()
plt.tight_layout()

# %% [markdown]
# With a few hundred weak labels (a ring tag from the Talk forum, on a sample already selected to be
# featured and face-on), neither model is a good ring finder: this shows the workflow, not a result. For
# science, start from a galaxy-pretrained encoder such as Zoobot v2's
# (`zt.load_pretrained("hf_hub:mwalmsley/zoobot-encoder-convnext_nano")`, see *Models*).
