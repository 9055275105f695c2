"""Synthetic Galaxy Zoo: rendered galaxies with volunteer votes simulated down the GZ DECaLS tree.

This is zoobot-tf's embedded default data set: every README command runs on it with nothing
downloaded. Each galaxy has true parameters (smooth or disc or artifact; roundness; edge-on with
a bulge shape; bulge size; spiral arms with a count, winding and handedness; bar strength;
merger state), is rendered with Sersic/exponential profiles, logarithmic spiral arms, Ferrers bars,
tidal tails, field stars, a Gaussian PSF and sky noise, and is shown to ~40 simulated volunteers.

Volunteers: each galaxy gets, per question, an answer-probability vector that depends on its true
parameters and on how clearly they can be seen (signal-to-noise and size), drawn from a Dirichlet
around that mean, so votes are over-dispersed like real Galaxy Zoo votes. Every volunteer walks
the tree independently: the number reaching a question is the number who chose its parent answer,
and their answers there are multinomial. So the counts are real Dirichlet-multinomial data over
the tree, with known ground truth (``true_*`` columns).

Deterministic: the same seed gives the same images and votes on any machine.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from zoobot_tf.schemas import Schema, get_schema

KINDS = ("smooth", "disk", "artifact")


@dataclass
class GalaxyTruth:
    kind: str  # smooth | disk | artifact
    axis_ratio: float  # projected b/a of the main body
    position_angle: float  # radians
    radius: float  # half-light radius, fraction of the image side
    snr: float  # signal-to-noise of the galaxy
    sersic_n: float = 4.0
    roundness: int = 0  # smooth: 0 round, 1 in-between, 2 cigar
    edge_on: bool = False
    bulge_shape: int = 1  # edge-on: 0 boxy, 1 none, 2 rounded
    bulge_size: int = 2  # face-on: 0 dominant .. 4 none
    spiral: bool = False
    arm_count: int = 2  # 1..6 (5, 6 are "more than 4")
    arm_strength: float = 0.0
    winding: int = 1  # 0 tight, 1 medium, 2 loose
    handedness: int = 1  # +1 / -1 (clockwise / anticlockwise on the sky)
    bar: int = 2  # 0 strong, 1 weak, 2 none
    merging: int = 0  # 0 none, 1 minor disturbance, 2 major disturbance, 3 merger
    artifact_type: int = 0  # 0 star with spikes, 1 satellite trail, 2 empty/defect

    @property
    def clarity(self) -> float:
        """How clearly volunteers can see the features, in (0.25, 1]."""
        c_snr = np.clip(math.log(self.snr / 4.0) / math.log(15.0), 0.0, 1.0)
        c_size = np.clip((self.radius - 0.05) / 0.15, 0.0, 1.0)
        return float(0.25 + 0.75 * math.sqrt(c_snr * (0.3 + 0.7 * c_size)))


def sample_truth(rng: np.random.Generator) -> GalaxyTruth:
    kind = rng.choice(KINDS, p=[0.45, 0.48, 0.07])
    g = GalaxyTruth(kind=str(kind), axis_ratio=1.0, position_angle=float(rng.uniform(0, math.pi)),
                    radius=float(math.exp(rng.uniform(math.log(0.09), math.log(0.22)))),
                    snr=float(math.exp(rng.uniform(math.log(8.0), math.log(100.0)))))
    if kind == "smooth":
        g.roundness = int(rng.choice(3, p=[0.45, 0.4, 0.15]))
        g.axis_ratio = float(rng.uniform(*[(0.8, 1.0), (0.5, 0.8), (0.22, 0.5)][g.roundness]))
        g.sersic_n = float(rng.uniform(2.5, 4.5))
    elif kind == "disk":
        g.edge_on = bool(rng.random() < 0.25)
        if g.edge_on:
            g.axis_ratio = float(rng.uniform(0.08, 0.2))
            g.bulge_shape = int(rng.choice(3, p=[0.2, 0.35, 0.45]))
        else:
            g.axis_ratio = float(rng.uniform(0.45, 1.0))
            g.bulge_size = int(rng.choice(5, p=[0.08, 0.2, 0.32, 0.25, 0.15]))
            g.spiral = bool(rng.random() < 0.7)
            if g.spiral:
                g.arm_count = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.05, 0.5, 0.2, 0.12, 0.08, 0.05]))
                g.arm_strength = float(rng.uniform(0.3, 1.0))
                g.winding = int(rng.choice(3, p=[0.3, 0.45, 0.25]))
                g.handedness = int(rng.choice([-1, 1]))
            g.bar = int(rng.choice(3, p=[0.15, 0.2, 0.65]))
    else:
        g.artifact_type = int(rng.choice(3))
        g.radius = float(rng.uniform(0.02, 0.05))
    if kind != "artifact":
        g.merging = int(rng.choice(4, p=[0.72, 0.14, 0.08, 0.06]))
    return g


# --------------------------------------------------------------------------- rendering
def _sersic(r: np.ndarray, r_e: float, n: float) -> np.ndarray:
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n
    return np.exp(-b * ((np.maximum(r, 1e-6) / r_e) ** (1.0 / n) - 1.0))


def _frame(x, y, pa, q, c=2.0):
    """Radius in a rotated, flattened frame; c > 2 gives boxy isophotes."""
    xr = x * math.cos(pa) + y * math.sin(pa)
    yr = (-x * math.sin(pa) + y * math.cos(pa)) / max(q, 1e-3)
    return (np.abs(xr) ** c + np.abs(yr) ** c) ** (1.0 / c), xr, yr


def _unit(img):
    s = img.sum()
    return img / s if s > 0 else img


def _tail(x, y, rng, center, length, width, curvature, angle):
    """A curved tidal tail: a Gaussian ridge along an arc."""
    t = np.linspace(0.0, 1.0, 40)
    ang = angle + curvature * t
    px = center[0] + length * t * np.cos(ang)
    py = center[1] + length * t * np.sin(ang)
    img = np.zeros_like(x)
    for k in range(len(t)):
        img += (1.0 - t[k]) * np.exp(-((x - px[k]) ** 2 + (y - py[k]) ** 2) / (2 * width ** 2))
    return img


RED = np.array([1.0, 0.78, 0.6])
DISK = np.array([0.85, 0.88, 1.0])
BLUE = np.array([0.6, 0.75, 1.0])
WHITE = np.array([1.0, 1.0, 1.0])


def render(g: GalaxyTruth, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one galaxy as uint8 (size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cx = (size - 1) / 2 + rng.normal(0, 0.01 * size)
    cy = (size - 1) / 2 + rng.normal(0, 0.01 * size)
    x, y = (xx - cx) / size, (yy - cy) / size  # units of the image side
    r_e = g.radius
    comps: list[tuple[np.ndarray, np.ndarray]] = []  # (unit-flux image, colour * flux)

    def add(img, colour, flux):
        comps.append((_unit(img), colour * flux))

    if g.kind == "smooth":
        r, _, _ = _frame(x, y, g.position_angle, g.axis_ratio)
        add(_sersic(r, r_e, g.sersic_n), RED, 1.0)
    elif g.kind == "disk":
        r, xr, yr = _frame(x, y, g.position_angle, g.axis_ratio)
        h = r_e / 1.68
        if g.edge_on:
            add(np.exp(-np.abs(xr) / h) * np.exp(-np.abs(yr * g.axis_ratio) / (0.09 * h)), DISK, 0.75)
            if g.bulge_shape != 1:
                rb, _, _ = _frame(x, y, g.position_angle, 0.75 if g.bulge_shape == 0 else 1.0,
                                  c=4.0 if g.bulge_shape == 0 else 2.0)
                add(_sersic(rb, 0.45 * r_e, 2.0), RED, 0.45)
        else:
            disc = np.exp(-r / h)
            if g.spiral:
                theta = np.arctan2(yr, xr)
                pitch = math.radians([10.0, 20.0, 35.0][g.winding] + rng.uniform(-3, 3))
                m = g.arm_count
                phase = np.log(np.maximum(r, 1e-4) / h) / math.tan(pitch)
                pattern = 0.5 + 0.5 * np.cos(m * (theta - g.handedness * phase) + rng.uniform(0, 2 * math.pi))
                pattern = pattern ** 3
                outer = 1.0 - np.exp(-(r / (0.6 * h)) ** 2)
                strength = 2.5 * g.arm_strength
                add(disc * ((1 - 0.5 * g.arm_strength) + strength * pattern * outer), BLUE, 0.8)
            else:
                add(disc, DISK, 0.8)
            bt = [0.65, 0.42, 0.25, 0.12, 0.0][g.bulge_size]
            if bt > 0:
                rb, _, _ = _frame(x, y, g.position_angle, min(1.0, g.axis_ratio + 0.3))
                add(_sersic(rb, 0.28 * r_e * (1 + bt), 3.0), RED, bt / (1 - bt) * 0.8)
            if g.bar != 2:
                bar_pa = g.position_angle + rng.uniform(0.3, 1.3)
                length = (1.3 if g.bar == 0 else 0.8) * r_e
                _, bx, by = _frame(x, y, bar_pa, 1.0)
                ferrers = np.clip(1 - (bx / length) ** 2 - (by / (0.22 * length)) ** 2, 0, None) ** 1.5
                add(ferrers, RED * 0.9 + 0.1, 0.35 if g.bar == 0 else 0.12)
    else:  # artifacts
        if g.artifact_type == 0:  # saturated star with diffraction spikes
            star = np.exp(-(x ** 2 + y ** 2) / (2 * 0.012 ** 2))
            spikes = (np.exp(-np.abs(x) / 0.004) * np.exp(-np.abs(y) / 0.25)
                      + np.exp(-np.abs(y) / 0.004) * np.exp(-np.abs(x) / 0.25))
            add(star, WHITE, 1.0)
            add(spikes, WHITE, 0.6)
        elif g.artifact_type == 1:  # satellite trail
            ang = rng.uniform(0, math.pi)
            d = np.abs(x * math.sin(ang) - y * math.cos(ang) - rng.uniform(-0.2, 0.2))
            add(np.exp(-d / 0.006), WHITE * np.array([1.0, 0.9, 0.8]), 1.0)
            add(np.exp(-(x ** 2 + y ** 2) / (2 * (0.03) ** 2)), RED, 0.3)
        else:  # faint smudge and a bad column
            add(np.exp(-(x ** 2 + y ** 2) / (2 * 0.05 ** 2)), DISK, 0.6)
            col = rng.integers(0, size)
            bad = np.zeros_like(x)
            bad[:, col] = 1.0
            add(bad, WHITE, 0.5)

    if g.merging > 0 and g.kind != "artifact":
        ang = rng.uniform(0, 2 * math.pi)
        if g.merging == 3:  # a companion of similar brightness, overlapping
            dist = rng.uniform(0.9, 1.6) * r_e
            ox, oy = dist * math.cos(ang), dist * math.sin(ang)
            r2, _, _ = _frame(x - ox, y - oy, rng.uniform(0, math.pi), rng.uniform(0.5, 1.0))
            add(_sersic(r2, r_e * rng.uniform(0.6, 1.0), 3.0), RED, rng.uniform(0.5, 0.9))
            add(_tail(x, y, rng, (ox / 2, oy / 2), 3.0 * r_e, 0.5 * r_e, rng.choice([-2.0, 2.0]), ang + math.pi / 2),
                DISK, 0.35)
        else:
            strength = 0.12 if g.merging == 1 else 0.45
            add(_tail(x, y, rng, (0, 0), 3.5 * r_e, 0.4 * r_e, rng.uniform(-2.5, 2.5), ang), DISK, strength)
            if g.merging == 2:
                add(_tail(x, y, rng, (0, 0), 3.0 * r_e, 0.4 * r_e, rng.uniform(-2.5, 2.5), ang + math.pi), DISK,
                    strength * 0.8)

    img = np.zeros((size, size, 3))
    for unit, colour_flux in comps:
        img += unit[..., None] * colour_flux[None, None, :]
    for _ in range(rng.poisson(1.5)):  # field stars
        sx, sy = rng.uniform(-0.5, 0.5, 2)
        if sx ** 2 + sy ** 2 < (2 * r_e) ** 2:
            continue
        img += _unit(np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * 0.006 ** 2)))[..., None] * rng.uniform(0.01, 0.12)
    psf = rng.uniform(0.6, 1.2) * size / 64.0
    img = ndimage.gaussian_filter(img, sigma=(psf, psf, 0))
    peak = np.percentile(img.max(axis=-1), 99.7) or 1.0
    img = img / peak
    noise_sigma = 1.0 / g.snr
    img = img + rng.normal(0.0, noise_sigma, img.shape) * np.array([1.0, 0.9, 1.1])
    stretched = np.arcsinh(10.0 * np.clip(img + 0.02, 0, None)) / np.arcsinh(10.0)
    return np.clip(np.round(255 * stretched), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- volunteers
def _ordinal(true_index: int, n: int, sharpness: float) -> np.ndarray:
    d = np.arange(n) - true_index
    p = np.exp(-0.5 * (d * sharpness) ** 2)
    return p / p.sum()


def _mix(p: np.ndarray, clarity: float) -> np.ndarray:
    """Blend towards uniform as clarity falls."""
    u = np.full_like(p, 1.0 / len(p))
    return clarity * p + (1 - clarity) * u


def answer_probabilities(g: GalaxyTruth) -> dict[str, np.ndarray]:
    """Mean answer probabilities of each GZ DECaLS question for this galaxy (before galaxy-level noise)."""
    c = g.clarity
    p: dict[str, np.ndarray] = {}
    if g.kind == "smooth":
        sf = [0.9, 0.08, 0.02]
    elif g.kind == "disk":
        bulgy = (not g.edge_on) and (not g.spiral) and g.bulge_size <= 1
        sf = [0.45, 0.53, 0.02] if bulgy else [0.1, 0.88, 0.02]
    else:
        sf = [0.08, 0.04, 0.88]
    p["smooth-or-featured"] = _mix(np.array(sf), 0.35 + 0.65 * c)
    edge = 0.92 if g.edge_on else float(np.clip(0.5 - g.axis_ratio, 0.02, 0.4))
    p["disk-edge-on"] = _mix(np.array([edge, 1 - edge]), c)
    if g.spiral:
        s = 0.55 + 0.4 * g.arm_strength
    else:
        s = 0.08
    p["has-spiral-arms"] = _mix(np.array([s, 1 - s]), c)
    p["bar"] = _mix(_ordinal(g.bar, 3, 1.6), c)
    p["bulge-size"] = _mix(_ordinal(g.bulge_size if not g.edge_on else 2, 5, 1.2), c)
    if g.kind == "smooth":
        round_index = 0 if g.axis_ratio > 0.78 else (1 if g.axis_ratio > 0.48 else 2)
    else:
        round_index = 1
    p["how-rounded"] = _mix(_ordinal(round_index, 3, 1.8), c)
    p["edge-on-bulge"] = _mix(_ordinal(g.bulge_shape, 3, 1.3), c)
    p["spiral-winding"] = _mix(_ordinal(g.winding, 3, 1.3), c)
    count_index = min(g.arm_count, 5) - 1  # 1..4 -> 0..3, >4 -> 4
    arms = _ordinal(count_index, 5, 1.5) * (0.6 + 0.4 * g.arm_strength * c)
    cant_tell = 1.0 - arms.sum()
    p["spiral-arm-count"] = _mix(np.append(arms, cant_tell), 0.5 + 0.5 * c)
    p["merging"] = _mix(_ordinal(g.merging, 4, 1.5), 0.4 + 0.6 * c)
    return p


def _base_question(name: str) -> str:
    for suffix in ("-dr5", "-dr8"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def simulate_votes(g: GalaxyTruth, schema: Schema, rng: np.random.Generator, n_volunteers: int = 40,
                   concentration: float = 40.0, probabilities: np.ndarray | None = None) -> np.ndarray:
    """Vote counts (n_answers,) from volunteers walking the tree for one galaxy. ``probabilities``, if given
    (n_answers,), receives the galaxy's own answer probabilities (the truth its votes are drawn from)."""
    means = answer_probabilities(g)
    counts = np.zeros(schema.n_answers, dtype=np.int64)
    base = {q.name: _base_question(q.name) for q in schema.questions}
    missing = set(means) - set(base.values())
    if missing or set(base.values()) - set(means):
        raise ValueError(f"The volunteer simulator walks the GZ DECaLS DR5/DR8 tree; schema {schema.name!r} "
                         f"does not match it (missing: {sorted(missing)})")
    for q in schema.question_order():
        key = base[q.name]
        # galaxy-level answer probabilities vary around the mean: over-dispersed, like real votes
        probs = rng.dirichlet(concentration * means[key] + 1e-3)
        if probabilities is not None:
            probabilities[q.start:q.end] = probs
        if q.asked_after is None:
            n = n_volunteers
        else:
            n = int(counts[schema.answer(q.asked_after).index])
        if n > 0:
            counts[q.start:q.end] = rng.multinomial(n, probs)
    return counts


def truth_columns(g: GalaxyTruth) -> dict:
    return {f"true_{k}": v for k, v in asdict(g).items()} | {"true_clarity": g.clarity}


def synthetic_galaxy(i: int, seed: int, stored_size: int, schema: Schema, mean_volunteers: float = 40.0,
                     probabilities: np.ndarray | None = None) -> tuple:
    """Galaxy ``i`` of a synthetic catalog: (truth, pixels, volunteers, vote counts). Its own random stream,
    so galaxy i is the same for any catalog size; ``probabilities`` as in :func:`simulate_votes`."""
    rng = np.random.default_rng([seed, i])
    g = sample_truth(rng)
    pixels = render(g, stored_size, rng)
    n_vol = int(np.clip(rng.poisson(mean_volunteers), 0.6 * mean_volunteers, 1.4 * mean_volunteers))
    votes = simulate_votes(g, schema, rng, n_volunteers=n_vol, probabilities=probabilities)
    return g, pixels, n_vol, votes


def true_answer_probabilities(n_galaxies: int, seed: int = 0, stored_size: int = 64,
                              schema: str | Schema = "gz_decals_dr5", mean_volunteers: float = 40.0) -> np.ndarray:
    """(n_galaxies, n_answers): the answer probabilities each galaxy of ``make_synthetic_catalog(n_galaxies,
    seed=seed, stored_size=stored_size, ...)`` drew its votes from: the truth a 90% vote-fraction interval
    should contain 90% of the time (calibration)."""
    schema = get_schema(schema)
    out = np.zeros((n_galaxies, schema.n_answers))
    for i in range(n_galaxies):
        synthetic_galaxy(i, seed, stored_size, schema, mean_volunteers, probabilities=out[i])
    return out


def make_synthetic_catalog(
    n_galaxies: int = 2000,
    output_dir: str | Path = "synthetic_gz",
    stored_size: int = 64,
    seed: int = 0,
    schema: str | Schema = "gz_decals_dr5",
    mean_volunteers: float = 40.0,
    progress: bool = True,
    jpeg_quality: int = 92,
) -> pd.DataFrame:
    """Render ``n_galaxies`` galaxies as ``stored_size`` JPEGs under ``output_dir/images`` and write
    ``catalog.csv``.

    Returns the catalog: ``id_str``, ``file_loc`` (absolute), one vote-count column per answer of
    ``schema``, ``total_volunteers`` and ``true_*`` ground-truth columns. Deterministic in ``seed``.
    """
    from PIL import Image
    from tqdm import tqdm

    schema = get_schema(schema)
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(n_galaxies), desc="rendering synthetic galaxies", unit="galaxy", disable=not progress):
        g, pixels, n_vol, votes = synthetic_galaxy(i, seed, stored_size, schema, mean_volunteers)
        id_str = f"synth-{seed}-{i:06d}"
        path = out / "images" / f"{id_str}.jpg"
        Image.fromarray(pixels).save(path, quality=jpeg_quality)
        row = {"id_str": id_str, "file_loc": str(path.resolve()), "total_volunteers": n_vol}
        row.update(dict(zip(schema.label_cols, votes.tolist())))
        row.update(truth_columns(g))
        rows.append(row)
    catalog = pd.DataFrame(rows)
    catalog.to_csv(out / "catalog.csv", index=False)
    return catalog
