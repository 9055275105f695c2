"""Catalog validation, TFRecord shards, decoding and the padded, weighted batches."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from helpers import vote_catalog
from PIL import Image

from zoobot_tf import losses
from zoobot_tf.data import catalogs, images, pipeline, splits, tfrecords
from zoobot_tf.models import Zoobot
from zoobot_tf.schemas import get_schema
from zoobot_tf.tasks import VoteTask


def test_validation_reports_every_problem_with_columns_and_rows(tmp_path):
    df = vote_catalog(tmp_path / "img", n=8)
    df = df.astype({c: float for c in df.columns if c not in ("id_str", "file_loc")})
    df.loc[2, "bar_strong"] = -1
    df.loc[3, "bar_weak"] = 2.5
    df.loc[4, "merging_none"] = np.nan
    df.loc[5, "id_str"] = "g0000"
    df.loc[6, "file_loc"] = str(tmp_path / "missing.jpg")
    df = df.drop(columns=["ring_yes"], errors="ignore").drop(columns=["spiral-winding_tight"])
    with pytest.raises(catalogs.CatalogError) as e:
        catalogs.validate_catalog(df, "gz_decals_dr5")
    msg = str(e.value)
    for needle in ["spiral-winding_tight", "'bar_strong' has negative counts at row 2 (id_str='g0002')",
                   "'bar_weak' has non-integer", "row 3", "'merging_none' has missing", "duplicate id_str",
                   "image files not found (1) at row 6"]:
        assert needle in msg, (needle, msg)


def test_valid_catalog_passes_and_split_is_stable(tmp_path):
    df = vote_catalog(tmp_path / "img", n=30)
    catalogs.validate_catalog(df, "gz_decals_dr5")
    ids = [f"x{i}" for i in range(2000)]
    s1 = splits.split_by_id(ids)
    s2 = splits.split_by_id(ids[::-1])[::-1]
    np.testing.assert_array_equal(s1, s2)
    frac = pd.Series(s1).value_counts(normalize=True)
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["test"] - 0.1) < 0.02


def test_decode_handles_png_alpha_16bit_and_greyscale(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgba = np.concatenate([rgb, np.zeros((8, 8, 1), np.uint8)], -1)  # fully transparent alpha
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    grey16 = np.full((8, 8), 65535 // 2, np.uint16)
    Image.fromarray(grey16).save(tmp_path / "b.png")
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=100)
    a = images.decode_image_bytes(tf.io.read_file(str(tmp_path / "a.png"))).numpy()
    b = images.decode_image_bytes(tf.io.read_file(str(tmp_path / "b.png"))).numpy()
    c = images.decode_image_bytes(tf.io.read_file(str(tmp_path / "c.jpg")), load_size=16).numpy()
    assert a.shape == (8, 8, 3) and np.allclose(a[..., 0], 200) and np.allclose(a[..., 1:], 0)
    np.testing.assert_allclose(b, 32767 / 257, atol=1e-3)  # 16-bit precision kept, scaled to [0, 255]
    assert c.shape == (16, 16, 3) and 190 < c[..., 0].mean() < 210
    assert a.max() > 1  # pixels stay in [0, 255]: only the model divides by 255


def test_decode_gives_8bit_pixels_exactly_in_every_format(tmp_path):
    """A pixel of value v reads as v.0 from an 8-bit PNG, a BMP, a GIF (PIL's decoding as the reference) and a
    JPEG (TensorFlow's own 8-bit JPEG decoder as the reference: JPEG decoders differ in their IDCT and
    chroma upsampling). TensorFlow's uint16 decoding widens non-PNG formats by 256, not 257: before this
    test a JPEG's 255 came out as 254.0."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3)).astype(np.uint8)
    rgb[:4, :4] = 255
    for name, image in [("x.png", Image.fromarray(rgb)), ("x.bmp", Image.fromarray(rgb)),
                        ("x.gif", Image.fromarray(rgb).convert("P"))]:
        image.save(tmp_path / name)
        expected = np.asarray(Image.open(tmp_path / name).convert("RGB"), np.float32)
        got = images.decode_image_bytes(tf.io.read_file(str(tmp_path / name))).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=name)
    for name, array in [("x.jpg", rgb), ("g.jpg", rgb[..., 0])]:
        Image.fromarray(array).save(tmp_path / name, quality=95)
        raw = tf.io.read_file(str(tmp_path / name))
        got = images.decode_image_bytes(raw).numpy()
        np.testing.assert_array_equal(got, tf.io.decode_jpeg(raw, channels=3).numpy().astype(np.float32))
        assert got.max() == 255.0, name


def test_fits_images_become_png_with_an_asinh_stretch(tmp_path):
    fits = pytest.importorskip("astropy.io.fits")
    data = np.zeros((16, 16), np.float32)
    data[6:10, 6:10] = 100.0
    fits.PrimaryHDU(data).writeto(tmp_path / "g.fits")
    png = images.read_image_file(tmp_path / "g.fits")
    out = images.decode_image_bytes(tf.constant(png)).numpy()
    assert out.shape == (16, 16, 3) and out[8, 8, 0] == 255 and out[0, 0, 0] == 0


def test_fits_masked_and_saturated_pixels_and_compound_suffixes(tmp_path, recwarn):
    """NaN (masked) pixels read as the background and +-inf (saturated) ones as the finite extremes, with no
    overflow; a folder's ids drop the whole suffix (x.fits.gz -> x)."""
    import gzip

    fits = pytest.importorskip("astropy.io.fits")
    from zoobot_tf.data.catalogs import folder_catalog

    rng = np.random.default_rng(0)
    clean = rng.normal(10.0, 1.0, (32, 32))
    clean[12:20, 12:20] += 200.0
    dirty = clean.copy()
    dirty[0:4, 0:4] = np.nan  # background pixels masked
    dirty[15, 15], dirty[16, 16] = np.inf, -np.inf
    expected = clean.copy()
    expected[0:4, 0:4] = np.median(dirty[np.isfinite(dirty)])
    expected[15, 15], expected[16, 16] = np.nanmax(dirty[np.isfinite(dirty)]), np.min(dirty[np.isfinite(dirty)])
    np.testing.assert_allclose(images.asinh_stretch(dirty), images.asinh_stretch(expected), atol=1e-12)
    assert not any(issubclass(w.category, RuntimeWarning) for w in recwarn)
    assert (images.asinh_stretch(np.full((4, 4), np.nan)) == 0).all()

    fits.PrimaryHDU(clean.astype(np.float32)).writeto(tmp_path / "a.fits")
    (tmp_path / "b.fits.gz").write_bytes(gzip.compress((tmp_path / "a.fits").read_bytes()))
    fits.CompImageHDU(clean.astype(np.float32)).writeto(tmp_path / "c.fits.fz")
    catalog = folder_catalog(tmp_path)
    assert catalog["id_str"].tolist() == ["a", "b", "c"]
    pngs = [images.read_image_file(p) for p in catalog["file_loc"]]
    assert pngs[0] == pngs[1]  # the gzipped copy reads as the same image


def test_fits_cubes_lose_length_one_axes_and_an_unreadable_one_says_why(tmp_path, caplog):
    fits = pytest.importorskip("astropy.io.fits")
    plane = np.random.default_rng(1).normal(0, 1, (16, 16))
    fits.PrimaryHDU(plane).writeto(tmp_path / "flat.fits")
    fits.PrimaryHDU(plane[None, None]).writeto(tmp_path / "cube.fits")  # (1, 1, y, x)
    assert images.read_image_file(tmp_path / "cube.fits") == images.read_image_file(tmp_path / "flat.fits")
    fits.PrimaryHDU(np.zeros((2, 3, 16, 16))).writeto(tmp_path / "four.fits")
    with pytest.raises(ValueError, match="must be 2D or 3D"):
        images._read_saying_why(str(tmp_path / "four.fits").encode())
    assert "four.fits (skipped): FITS image must be 2D or 3D. Received shape (2, 3, 16, 16)" in caplog.text


def test_why_an_image_was_skipped(tmp_path):
    """The reason column of ``<table>.skipped.csv``: what reading and decoding the file as the pipelines do
    says, in a few words."""
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "fine.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "fine.jpg").read_bytes()[:60])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.jpg").mkdir()
    why = {p: images.why_unreadable(tmp_path / p) for p in ("fine.jpg", "cut.jpg", "empty.png", "folder.jpg",
                                                            "gone.jpg")}
    assert why["fine.jpg"] == "could not be read during the run (it reads now)"
    assert why["cut.jpg"].startswith("not a readable image: ") and why["empty.png"] == "empty file", why
    assert why["folder.jpg"].startswith("cannot be read: ") and why["gone.jpg"] == "file not found", why


def test_shards_round_trip_ids_votes_and_manifest(tmp_path):
    df = vote_catalog(tmp_path / "img", n=40)
    manifest = tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), galaxies_per_shard=10,
                                      progress=False)
    assert set(manifest["splits"]) <= {"train", "val", "test"}
    assert sum(s["n_galaxies"] for s in manifest["splits"].values()) == 40
    assert json.loads((tmp_path / "shards" / "manifest.json").read_text()) == manifest
    tfrecords.shard_files(tmp_path / "shards", "train", verify=True)
    seen = {}
    for split in manifest["splits"]:
        ids, votes = tfrecords.read_labels(tmp_path / "shards", split)
        seen.update(dict(zip(ids, votes)))
    schema = get_schema("gz_decals_dr5")
    for _, row in df.iterrows():
        np.testing.assert_array_equal(seen[row.id_str], row[schema.label_cols].to_numpy(np.float32))
    with pytest.raises(FileExistsError):
        tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False)


def test_corrupt_images_are_skipped_and_listed(tmp_path):
    df = vote_catalog(tmp_path / "img", n=12)
    (tmp_path / "img" / "g0003.jpg").write_bytes(b"not an image")
    manifest = tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False)
    assert manifest["skipped_ids"] == ["g0003"]
    assert sum(s["n_galaxies"] for s in manifest["splits"].values()) == 11


def test_corrupted_shard_is_detected(tmp_path):
    df = vote_catalog(tmp_path / "img", n=12)
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False, split_col=None,
                           splits={"train": 1.0})
    with pytest.raises(tfrecords.ShardError, match="workers"):
        tfrecords.shard_dataset(tmp_path / "shards", "train", 4, 32, num_workers=5)
    shard = Path(tfrecords.shard_files(tmp_path / "shards", "train")[0])
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # same size: only the sha256 notices
    shard.write_bytes(bytes(raw))
    tfrecords.shard_files(tmp_path / "shards", "train")  # the cheap check (sizes) passes
    with pytest.raises(tfrecords.ShardError, match="does not match its sha256"):
        tfrecords.shard_files(tmp_path / "shards", "train", verify=True)
    with open(shard, "ab") as f:  # a changed size is caught without reading the shard
        f.write(b"x")
    with pytest.raises(tfrecords.ShardError, match="the manifest recorded"):
        tfrecords.shard_files(tmp_path / "shards", "train")


def test_resize_at_shard_time(tmp_path):
    df = vote_catalog(tmp_path / "img", n=6, size=80)
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), stored_size=24, progress=False,
                           split_col=None, splits={"train": 1.0})
    raw, _, _ = next(iter(tf.data.TFRecordDataset(tfrecords.shard_files(tmp_path / "shards", "train")).map(
        tfrecords.parse_fn(VoteTask("gz_decals_dr5")))))
    assert tf.io.decode_jpeg(raw).shape == (24, 24, 3)


def test_partial_batches_are_padded_with_zero_weight_rows():
    x = tf.reshape(tf.range(5 * 2 * 2 * 3, dtype=tf.float32), (5, 2, 2, 3))
    y = tf.ones((5, 4))
    px, py, w = pipeline.pad_batch(x, y, 8)
    assert px.shape == (8, 2, 2, 3)
    np.testing.assert_allclose(w.numpy(), [8 / 5] * 5 + [0] * 3, rtol=1e-6)
    np.testing.assert_array_equal(py.numpy()[5:], 0)
    np.testing.assert_array_equal(px.numpy()[5:], x.numpy()[:3])  # real rows repeated, not zeros


def test_pipelines_turn_tf_data_autotuning_off_on_the_fast_path_only():
    """Autotuning makes deleting an iterator wait for its tuning thread (benchmarks/pipeline_autotune.py):
    every training/evaluation and prediction pipeline has it off on the fast path, on under the stock path."""
    from zoobot_tf.ops import fast_path

    raw = tf.data.Dataset.from_tensor_slices(([tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()] * 3,
                                              ["a", "b", "c"]))
    for fast in (True, False):
        with fast_path(fast):
            made = [pipeline.finish(raw, 2, 8, training=True, n_examples=3, seed=0),
                    pipeline.decoded_batches(raw, 2, 8)]
        for ds in made:
            assert (ds.options().autotune.enabled is False) == fast  # unset (on) under the stock path
            assert len(list(ds)) == 2  # and they still read every galaxy


def test_keras_evaluate_equals_the_mean_over_real_galaxies(tmp_path):
    """Padding, weights and cardinality together: Keras' reported loss is the true mean loss."""
    df = vote_catalog(tmp_path / "img", n=21)
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False, split_col=None,
                           splits={"train": 1.0})
    model = Zoobot(backbone="resnet_micro", image_size=32)
    model.compile()
    ds = tfrecords.shard_dataset(tmp_path / "shards", "train", 8, model.view.load_size)
    assert int(ds.cardinality()) == 3
    result = model.evaluate(ds, verbose=0, return_dict=True)
    conc, counts = [], []
    for x, y, w in ds:
        keep = w.numpy() > 0
        conc.append(model(x, training=False).numpy()[keep])
        counts.append(y.numpy()[keep])
    conc, counts = np.concatenate(conc), np.concatenate(counts)
    assert len(counts) == 21
    per_q = losses.per_question_nll(counts, conc, get_schema("gz_decals_dr5")).numpy()
    np.testing.assert_allclose(result["loss_bar"], per_q[:, 3].mean(), rtol=1e-4)
    # Keras' own loss tracker weights batches by their padded size; nll and per-question metrics are exact
    np.testing.assert_allclose(result["nll"], per_q.sum(1).mean(), rtol=1e-4)
    np.testing.assert_allclose(sum(v for k, v in result.items() if k.startswith("loss_")), per_q.sum(1).mean(),
                               rtol=1e-4)


def test_deterministic_training_order(tmp_path):
    df = vote_catalog(tmp_path / "img", n=30)
    tfrecords.write_shards(df, tmp_path / "shards", task=VoteTask("gz_decals_dr5"), progress=False, split_col=None,
                           splits={"train": 1.0}, galaxies_per_shard=8)

    def order(seed):
        ds = tfrecords.shard_dataset(tmp_path / "shards", "train", 30, 32, training=True, seed=seed,
                                     deterministic=True)
        return next(iter(ds))[1].numpy()

    np.testing.assert_array_equal(order(3), order(3))
    assert not np.array_equal(order(3), order(4))


def test_gz2_willett_columns_map_to_the_schema():
    cols = {}
    schema = get_schema("gz2_willett")
    for qi, q in enumerate(schema.questions):
        for ai, a in enumerate(q.answers):
            cols[f"t{qi + 1:02d}_task_a{a.index + 1:02d}_{a.text.replace('-', '_')}_count"] = [ai]
    table = pd.DataFrame({"objid": [7], **cols})
    out = catalogs.gz2_willett_to_schema_columns(table)
    assert list(out.columns) == ["id_str"] + schema.label_cols
