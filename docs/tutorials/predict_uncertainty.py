# %% [markdown]
# # Predictions with uncertainty
#
# A vote model predicts, for each question, the Dirichlet concentrations of the volunteers' vote
# fractions. zoobot-tf turns them into expected vote fractions with credible intervals, averaging over
# MC-dropout samples of the head. Synthetic galaxies know the truth: their renderer chose the probability
# of each answer, so we can see whether the intervals hold it.

# %%
import os
import tempfile

os.chdir(tempfile.mkdtemp(prefix="zoobot-tf-tutorial-"))  # a scratch folder for what we write

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import zoobot_tf as zt
from zoobot_tf.data.synthetic import GalaxyTruth, answer_probabilities

catalog = zt.make_synthetic_catalog(300, "galaxies", seed=11, progress=False)
zt.predict("zoobot_synthetic", catalog, "predictions.csv", n_samples=10, interval=0.9, progress=False)
predictions = pd.read_csv("predictions.csv").set_index("id_str").loc[catalog["id_str"]]
print(predictions.filter(like="smooth-or-featured").head(3).round(3).to_string())

# %% [markdown]
# ## Intervals against the truth
#
# For the first question, the renderer's mean answer probabilities (before each galaxy's own scatter)
# are the target. The 90% intervals cover the volunteers' fraction the model expects, including the
# model's own uncertainty from dropout.

# %%
truth_cols = [c for c in catalog.columns if c.startswith("true_") and c != "true_clarity"]
truths = [GalaxyTruth(**{c[5:]: row[c] for c in truth_cols}) for _, row in catalog.iterrows()]
p_smooth = np.array([answer_probabilities(t)["smooth-or-featured"][0] for t in truths])
fraction = predictions["smooth-or-featured_smooth_fraction"].to_numpy()
lower = predictions["smooth-or-featured_smooth_fraction_lower"].to_numpy()
upper = predictions["smooth-or-featured_smooth_fraction_upper"].to_numpy()
covered = np.mean((p_smooth >= lower) & (p_smooth <= upper))
print(f"90% intervals hold the renderer's probability for {covered:.0%} of {len(fraction)} galaxies")

order = np.argsort(fraction)
plt.figure(figsize=(8, 3.5))
plt.fill_between(np.arange(len(order)), lower[order], upper[order], alpha=0.3, label="90% interval")
plt.plot(fraction[order], label="predicted fraction")
plt.plot(p_smooth[order], ".", ms=3, color="k", label="renderer's probability")
plt.xlabel("galaxies, by predicted fraction"), plt.ylabel("P(smooth)"), plt.legend(fontsize=8)
plt.tight_layout()

# %% [markdown]
# ## Galaxies with their answers
#
# Questions that volunteers would be asked with probability below one half are left empty: the table says
# "how many spiral arms" only where a galaxy is likely a face-on disc.

# %%
from PIL import Image

fig, axes = plt.subplots(1, 4, figsize=(12, 3.2))
for ax, i in zip(axes, [order[0], order[len(order) // 3], order[2 * len(order) // 3], order[-1]]):
    row = predictions.iloc[i]
    ax.imshow(Image.open(catalog["file_loc"].iloc[i]))
    ax.set_title(f"smooth {row['smooth-or-featured_smooth_fraction']:.2f} "
                 f"[{row['smooth-or-featured_smooth_fraction_lower']:.2f}, "
                 f"{row['smooth-or-featured_smooth_fraction_upper']:.2f}]\n"
                 f"P(asked about arms) {row['has-spiral-arms_prob_asked']:.2f}", fontsize=8)
    ax.set_axis_off()
plt.tight_layout()
