import json
from pathlib import Path

import pytest

from zoobot_tf.schemas import (
    BUILTIN_SCHEMAS,
    Schema,
    SchemaError,
    get_schema,
    list_schemas,
)


def test_decals_dr5_matches_reference_tree():
    s = get_schema("gz_decals_dr5")
    assert (s.n_questions, s.n_answers) == (10, 34)
    assert s.label_cols[:3] == ["smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk",
                                "smooth-or-featured_artifact"]
    assert s.question("has-spiral-arms").asked_after == "disk-edge-on_no"
    assert s.question("edge-on-bulge").asked_after == "disk-edge-on_yes"
    assert s.question("merging").asked_after is None
    assert [q.name for q in s.children("has-spiral-arms_yes")] == ["spiral-winding", "spiral-arm-count"]
    # answers of a question are contiguous and the groups tile the vector
    groups = s.question_index_groups
    assert groups[0] == (0, 3) and groups[-1][1] == 34
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))


@pytest.mark.parametrize("name,shape", [
    ("gz2", (10, 30)), ("gz2_willett", (11, 37)), ("gz_decals_dr12", (10, 30)), ("gz_decals_dr8", (10, 34)),
    ("gz_cosmic_dawn", (13, 45)), ("gz_rings", (1, 2)), ("gz_hubble", (12, 34)), ("gz_candels", (11, 32)),
    ("gz_hubble_clumps", (13, 40)), ("gz_candels_clumps", (12, 38)), ("gz_jwst", (12, 39)), ("gz_euclid", (13, 46)),
    ("gz_evo_v1", (76, 239)), ("gz_evo_v2_public", (60, 188)),
])
def test_builtin_sizes(name, shape):
    s = get_schema(name)
    assert (s.n_questions, s.n_answers) == shape


def test_every_builtin_is_a_valid_tree_and_round_trips():
    for name in list_schemas():
        s = BUILTIN_SCHEMAS[name]
        order = [q.name for q in s.question_order()]
        for q in s.questions:
            parent = s.parent_question(q)
            if parent is not None:
                assert order.index(parent.name) < order.index(q.name)
        assert Schema.from_dict(json.loads(s.to_json())) == s
        assert [s.questions[i].name for i in s.answer_question_index()] == [a.question for a in s.answers]


def test_ortho_suffix_rewrites_dependencies():
    s = get_schema("gz_decals_dr5_ortho")
    assert s.label_cols[0] == "smooth-or-featured-dr5_smooth"
    assert s.question("bar-dr5").asked_after == "disk-edge-on-dr5_no"
    evo = get_schema("gz_evo_v1")
    assert len(set(evo.label_cols)) == evo.n_answers


def test_define_in_a_few_lines_and_from_yaml(tmp_path):
    s = Schema.from_dict({"name": "mine", "questions": {
        "smooth-or-featured": {"answers": ["smooth", "featured"]},
        "has-bar": {"answers": ["yes", "no"], "asked_after": "smooth-or-featured_featured"}}})
    assert s.label_cols == ["smooth-or-featured_smooth", "smooth-or-featured_featured", "has-bar_yes", "has-bar_no"]
    path = tmp_path / "tree.yaml"
    s.to_yaml(path)
    assert get_schema(str(path)) == s
    # Zoobot's two-dict form, with leading underscores
    z = Schema.from_dict({"question_answer_pairs": {"ring": ["_yes", "_no"]}, "dependencies": {"ring": None}})
    assert z.label_cols == ["ring_yes", "ring_no"]


@pytest.mark.parametrize("questions,deps,match", [
    ({"a": ["x", "y"]}, {"a": "b_x"}, "not an answer label"),
    ({"a": ["x", "x"]}, {}, "duplicate answers"),
    ({"a": ["x"], "b": ["y"]}, {"a": "b_y", "b": "a_x"}, "cycle"),
    ({"a": ["x"]}, {"zz": None}, "not in the schema"),
])
def test_bad_trees_raise_clear_errors(questions, deps, match):
    with pytest.raises(SchemaError, match=match):
        Schema("bad", questions, deps)


def test_unknown_schema_lists_builtins():
    with pytest.raises(KeyError, match="gz_decals_dr5"):
        get_schema("no-such-tree")


# ---------------------------------------------------------------------------------- Zoobot's trees (issue 22)
ZOOBOT = json.loads((Path(__file__).parent / "fixtures" / "zoobot_label_metadata.json").read_text())
SUFFIXES = ("-candels", "-hubble", "-cd", "-euclid", "-jwst", "-dr5", "-dr8", "-dr12", "-gz2", "-ukidss")


def _zoobot_dependencies(var: str) -> dict:
    """The dependencies galaxy-datasets pairs with ``<var>_pairs``. Trees without their own dict (the
    unsuffixed candels/hubble/hubble_v2) take their ortho form's, suffix removed."""
    deps = ZOOBOT["deps"]
    if f"{var}_dependencies" in deps:
        return deps[f"{var}_dependencies"]
    if var.startswith("decals_"):
        return deps["decals_ortho_dependencies"]
    ortho = deps[f"{var}_ortho_dependencies"]

    def strip(text):
        for s in SUFFIXES:
            text = text.replace(f"{s}_", "_") if text and f"{s}_" in text else text
            if text and text.endswith(s):
                text = text[: -len(s)]
        return text
    return {strip(q): strip(p) if p else None for q, p in ortho.items()}


@pytest.mark.parametrize("var", sorted(ZOOBOT["pairs"]))
def test_zoobot_named_schema_is_zoobots_tree(var):
    from zoobot_tf.schemas import ZOOBOT_NAMES

    name = var[: -len("_pairs")]
    ours = get_schema(name)
    assert ours is get_schema(ZOOBOT_NAMES[name]) is get_schema(var)  # Zoobot's names resolve, with or without _pairs
    pairs = ZOOBOT["pairs"][var]
    deps = _zoobot_dependencies(name)
    assert ours.question_names == list(pairs), var
    for q in ours.questions:
        assert q.answer_texts == [a.lstrip("_") for a in pairs[q.name]], (var, q.name)
        assert q.asked_after == deps[q.name], (var, q.name)
    assert ours.label_cols == [q + a for q, answers in pairs.items() for a in answers]  # galaxy-datasets' columns


def test_clump_count_trees_are_extensions_under_their_own_names():
    assert "clump-count" not in get_schema("gz_hubble").question_names
    assert "clump-count" not in get_schema("gz_candels").question_names
    hubble = get_schema("gz_hubble_clumps")
    assert hubble.question("clump-count").asked_after == "clumpy-appearance_yes"
    assert [q for q in hubble.question_names if q != "clump-count"] == get_schema("gz_hubble").question_names
    assert get_schema("gz_evo_v1_clumps").n_questions == get_schema("gz_evo_v1").n_questions + 2
