# %% [markdown]
# # Similarity search and anomalies
#
# Embeddings place similar galaxies near each other, so the same table answers "show me galaxies like
# this one" and "show me the strangest galaxies", without labels. Here a field of synthetic galaxies
# hides a few artifacts (satellite trails, saturated stars): they should rank as the most anomalous.

# %%
import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="zoobot-tf-tutorial-"))  # a scratch folder for what we write

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

import zoobot_tf as zt
from zoobot_tf.representations import EmbeddingIndex

catalog = zt.make_synthetic_catalog(400, "field", seed=5, progress=False)
table = zt.embed("zoobot_synthetic", catalog, "embeddings.parquet", pca_components=16, anomaly_k=10,
                 progress=False)
kinds = catalog.set_index("id_str")["true_kind"]
print(table.shape, kinds.value_counts().to_dict())

# %% [markdown]
# ## The most anomalous galaxies
#
# The anomaly score is the mean cosine distance to a galaxy's 10 nearest neighbours in embedding space.

# %%
ranked = table.sort_values("anomaly_score", ascending=False).reset_index(drop=True)
top = ranked.head(8)
print("kinds among the 8 most anomalous:", kinds.loc[top["id_str"]].value_counts().to_dict())
artifacts = kinds[kinds == "artifact"].index
ranks = ranked.index[ranked["id_str"].isin(artifacts)]
print(f"artifacts rank {sorted(ranks.tolist())} of {len(ranked)}; "
      f"median rank of the others {int(np.median(ranked.index[~ranked['id_str'].isin(artifacts)]))}")

files = catalog.set_index("id_str")["file_loc"]
fig, axes = plt.subplots(1, 8, figsize=(14, 2.2))
for ax, (_, row) in zip(axes, top.iterrows()):
    ax.imshow(Image.open(files[row["id_str"]]))
    ax.set_title(f"{kinds[row['id_str']]}\n{row['anomaly_score']:.3f}", fontsize=8)
    ax.set_axis_off()
plt.tight_layout()

# %% [markdown]
# ## Galaxies like this one

# %%
index = EmbeddingIndex.from_table(table)
query = kinds[kinds == "disk"].index[0]
neighbours = index.neighbours(query, k=5)
fig, axes = plt.subplots(1, 6, figsize=(11, 2.2))
for ax, (gid, label) in zip(axes, [(query, "query")] + [(g, f"{s:.3f}") for g, s in
                                                       zip(neighbours["id_str"], neighbours["similarity"])]):
    ax.imshow(Image.open(files[gid]))
    ax.set_title(f"{label}\n{kinds[gid]}", fontsize=8)
    ax.set_axis_off()
plt.tight_layout()
print(neighbours)
