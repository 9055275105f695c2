"""Galaxy Zoo decision trees: questions, answers and which answer leads to which question.

A :class:`Schema` is the single source of truth used by the loss (per-question slices of the vote
vector), the metrics, the prediction tables (column names, masking by the probability that a
question was asked) and the catalog validation (which columns must exist).

Label columns are ``<question>_<answer>``, e.g. ``smooth-or-featured_smooth``; the answers of one
question are contiguous. Campaign-specific ("ortho") copies append a suffix to every question
(``smooth-or-featured-dr5_smooth``) so several campaigns can share one head without mixing votes.

Define a new tree in a few lines::

    schema = Schema.from_dict({
        "name": "my-tree",
        "questions": {
            "smooth-or-featured": {"answers": ["smooth", "featured"]},
            "has-bar": {"answers": ["yes", "no"], "asked_after": "smooth-or-featured_featured"},
        },
    })

or from YAML with :meth:`Schema.from_yaml`, or pick a built-in one with :func:`get_schema`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np


def question_matrix(groups, n_answers: int) -> np.ndarray:
    """(n_answers, n_groups) float32 0/1 matrix from ``[(start, end), ...]``: which group sums each answer
    column (a column no group holds is a zero row)."""
    m = np.zeros((n_answers, len(groups)), dtype=np.float32)
    for g, (start, end) in enumerate(groups):
        m[start:end, g] = 1.0
    return m


class SchemaError(ValueError):
    """A decision tree that is not well formed (unknown parent answer, cycle, duplicate names)."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One answer of one question. ``label`` is the catalog column holding its vote count."""

    question: str
    text: str
    index: int  # position in the schema's flat answer vector

    @property
    def label(self) -> str:
        return f"{self.question}_{self.text}"


@dataclasses.dataclass(frozen=True)
class Question:
    """A question, its answers (in order) and the answer label after which it is asked (None: always)."""

    name: str
    answers: tuple[Answer, ...]
    asked_after: str | None
    start: int  # first answer index in the flat vector
    end: int  # one past the last answer index

    @property
    def label_cols(self) -> list[str]:
        return [a.label for a in self.answers]

    @property
    def answer_texts(self) -> list[str]:
        return [a.text for a in self.answers]


class Schema:
    """An ordered decision tree.

    Args:
        name: short identifier (stored in model configs and exports).
        questions: mapping ``question -> [answer, ...]`` in order, answers without the question prefix
            (a leading ``_`` as in Zoobot's ``'_smooth'`` is accepted and stripped).
        dependencies: mapping ``question -> parent answer label`` (e.g. ``'smooth-or-featured_smooth'``)
            or None for questions always asked. Missing questions default to None.
    """

    def __init__(
        self,
        name: str,
        questions: Mapping[str, Sequence[str]],
        dependencies: Mapping[str, str | None] | None = None,
    ):
        if not questions:
            raise SchemaError(f"Schema {name!r} has no questions.")
        dependencies = dict(dependencies or {})
        unknown = set(dependencies) - set(questions)
        if unknown:
            raise SchemaError(
                f"Schema {name!r}: dependencies name questions that are not in the schema: {sorted(unknown)}"
            )
        self.name = str(name)
        built: list[Question] = []
        answers: list[Answer] = []
        for q_name, texts in questions.items():
            texts = [t[1:] if t.startswith("_") else t for t in texts]
            if len(texts) < 1:
                raise SchemaError(f"Schema {name!r}: question {q_name!r} has no answers.")
            if len(set(texts)) != len(texts):
                raise SchemaError(f"Schema {name!r}: question {q_name!r} has duplicate answers: {texts}")
            start = len(answers)
            q_answers = tuple(Answer(q_name, t, start + i) for i, t in enumerate(texts))
            answers.extend(q_answers)
            built.append(Question(q_name, q_answers, dependencies.get(q_name), start, len(answers)))
        self.questions: list[Question] = built
        self.answers: list[Answer] = answers
        self._question_by_name = {q.name: q for q in built}
        self._answer_by_label = {a.label: a for a in answers}
        if len(self._answer_by_label) != len(answers):
            raise SchemaError(f"Schema {name!r} has duplicate label columns.")
        for q in built:
            if q.asked_after is not None and q.asked_after not in self._answer_by_label:
                raise SchemaError(
                    f"Schema {name!r}: question {q.name!r} is asked after {q.asked_after!r}, "
                    f"which is not an answer label of this schema."
                )
            if q.asked_after is not None and self._answer_by_label[q.asked_after].question == q.name:
                raise SchemaError(f"Schema {name!r}: question {q.name!r} depends on its own answer.")
        for q in built:  # cycle check: walking up from any question must end at a root
            seen = {q.name}
            parent = q
            while parent.asked_after is not None:
                parent = self._question_by_name[self._answer_by_label[parent.asked_after].question]
                if parent.name in seen:
                    raise SchemaError(f"Schema {name!r}: dependency cycle through question {q.name!r}.")
                seen.add(parent.name)

    # ----------------------------------------------------------------- lookups
    @property
    def label_cols(self) -> list[str]:
        """All vote-count columns, in the order of the model's outputs."""
        return [a.label for a in self.answers]

    @property
    def question_names(self) -> list[str]:
        return [q.name for q in self.questions]

    @property
    def n_answers(self) -> int:
        return len(self.answers)

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def question_index_groups(self) -> list[tuple[int, int]]:
        """``[(start, end), ...]`` per question, end exclusive: the slice of the answer vector."""
        return [(q.start, q.end) for q in self.questions]

    def question(self, name: str) -> Question:
        try:
            return self._question_by_name[name]
        except KeyError:
            raise KeyError(f"Schema {self.name!r} has no question {name!r}; questions: {self.question_names}") from None

    def answer(self, label: str) -> Answer:
        try:
            return self._answer_by_label[label]
        except KeyError:
            raise KeyError(f"Schema {self.name!r} has no answer column {label!r}.") from None

    def parent_question(self, question: str | Question) -> Question | None:
        q = self.question(question) if isinstance(question, str) else question
        if q.asked_after is None:
            return None
        return self._question_by_name[self._answer_by_label[q.asked_after].question]

    def children(self, answer_label: str) -> list[Question]:
        """Questions asked immediately after the given answer."""
        return [q for q in self.questions if q.asked_after == answer_label]

    def question_order(self) -> list[Question]:
        """Questions with every parent before its children (stable w.r.t. schema order)."""
        done: list[Question] = []
        names: set[str] = set()
        pending = list(self.questions)
        while pending:
            for q in list(pending):
                parent = self.parent_question(q)
                if parent is None or parent.name in names:
                    done.append(q)
                    names.add(q.name)
                    pending.remove(q)
        return done

    def answer_to_question_matrix(self) -> np.ndarray:
        """(n_answers, n_questions) 0/1 matrix: which question each answer belongs to."""
        return question_matrix(self.question_index_groups, self.n_answers)

    def answer_question_index(self) -> np.ndarray:
        """(n_answers,) the index of each answer's question."""
        return np.repeat(np.arange(self.n_questions), [q.end - q.start for q in self.questions])

    # ----------------------------------------------------------------- variants
    def with_suffix(self, suffix: str, name: str | None = None) -> "Schema":
        """Campaign-specific ("ortho") copy: ``suffix='-dr5'`` turns ``bar`` into ``bar-dr5``."""
        qs = {q.name + suffix: q.answer_texts for q in self.questions}
        deps = {}
        for q in self.questions:
            if q.asked_after is None:
                deps[q.name + suffix] = None
            else:
                a = self._answer_by_label[q.asked_after]
                deps[q.name + suffix] = f"{a.question}{suffix}_{a.text}"
        return Schema(name or f"{self.name}{suffix}", qs, deps)

    @staticmethod
    def combine(name: str, schemas: Iterable["Schema"]) -> "Schema":
        """One schema holding the questions of several (e.g. all campaigns, each with its own suffix)."""
        qs: dict[str, list[str]] = {}
        deps: dict[str, str | None] = {}
        for s in schemas:
            for q in s.questions:
                if q.name in qs:
                    raise SchemaError(f"Question {q.name!r} appears in more than one schema; use with_suffix().")
                qs[q.name] = q.answer_texts
                deps[q.name] = q.asked_after
        return Schema(name, qs, deps)

    # ----------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "questions": {
                q.name: ({"answers": q.answer_texts, "asked_after": q.asked_after}
                         if q.asked_after else {"answers": q.answer_texts})
                for q in self.questions
            },
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "Schema":
        """From ``{"name": ..., "questions": {q: {"answers": [...], "asked_after": label|None}}}``.

        Also accepts Zoobot's two-dict form ``{"name", "question_answer_pairs", "dependencies"}``.
        """
        if "question_answer_pairs" in d:
            return cls(d.get("name", "custom"), d["question_answer_pairs"], d.get("dependencies"))
        if "questions" not in d:
            raise SchemaError(f"A schema dict needs a 'questions' mapping. Received keys: {sorted(d)}")
        qs, deps = {}, {}
        for q_name, spec in d["questions"].items():
            if isinstance(spec, Mapping):
                qs[q_name] = list(spec["answers"])
                deps[q_name] = spec.get("asked_after")
            else:
                qs[q_name] = list(spec)
        return cls(d.get("name", "custom"), qs, deps)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Schema":
        import yaml

        with open(path) as f:
            return cls.from_dict(yaml.safe_load(f))

    def to_yaml(self, path: str | Path) -> None:
        import yaml

        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def __eq__(self, other) -> bool:
        return isinstance(other, Schema) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, {self.n_questions} questions, {self.n_answers} answers)"

    def describe(self) -> str:
        """A readable tree, one question per line."""
        lines = [repr(self)]
        for q in self.questions:
            after = f"  [after {q.asked_after}]" if q.asked_after else "  [always]"
            lines.append(f"  {q.name}: {', '.join(q.answer_texts)}{after}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- built-in trees
# Question -> (answers, parent answer label). The trees Zoobot defines are written exactly as
# galaxy-datasets 0.0.25 (the version zoobot 2.9.0 installs) defines them in shared/label_metadata.py:
# the same questions, answer order and dependencies (tests/test_schemas.py compares every one with a
# snapshot of that module, tests/fixtures/zoobot_label_metadata.json). ZOOBOT_NAMES maps Zoobot's
# variable names to these; docs/migration.md lists them.

_DECALS_DR5 = {  # GZ DECaLS DR5 and DR8 campaigns, and DESI
    "smooth-or-featured": (["smooth", "featured-or-disk", "artifact"], None),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "bar": (["strong", "weak", "no"], "disk-edge-on_no"),
    "bulge-size": (["dominant", "large", "moderate", "small", "none"], "disk-edge-on_no"),
    "how-rounded": (["round", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "edge-on-bulge": (["boxy", "none", "rounded"], "disk-edge-on_yes"),
    "spiral-winding": (["tight", "medium", "loose"], "has-spiral-arms_yes"),
    "spiral-arm-count": (["1", "2", "3", "4", "more-than-4", "cant-tell"], "has-spiral-arms_yes"),
    "merging": (["none", "minor-disturbance", "major-disturbance", "merger"], None),
}

_DECALS_DR12 = {  # GZ DECaLS DR1/2
    "smooth-or-featured": (["smooth", "featured-or-disk", "artifact"], None),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "bar": (["yes", "no"], "disk-edge-on_no"),
    "bulge-size": (["dominant", "obvious", "none"], "disk-edge-on_no"),
    "how-rounded": (["completely", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "edge-on-bulge": (["boxy", "none", "rounded"], "disk-edge-on_yes"),
    "spiral-winding": (["tight", "medium", "loose"], "has-spiral-arms_yes"),
    "spiral-arm-count": (["1", "2", "3", "4", "more-than-4"], "has-spiral-arms_yes"),
    "merging": (["neither", "tidal-debris", "both", "merger"], None),
}

# GZ2 as Zoobot trains on it (10 questions, 30 answers; the 'odd feature' types are left out); UKIDSS too.
_GZ2 = {
    "smooth-or-featured": (["smooth", "featured-or-disk", "artifact"], None),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "has-spiral-arms": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "bar": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "bulge-size": (["dominant", "obvious", "just-noticeable", "no"], "smooth-or-featured_featured-or-disk"),
    "something-odd": (["yes", "no"], None),
    "how-rounded": (["round", "in-between", "cigar"], "smooth-or-featured_smooth"),
    "bulge-shape": (["round", "boxy", "no-bulge"], "disk-edge-on_yes"),
    "spiral-winding": (["tight", "medium", "loose"], "has-spiral-arms_yes"),
    "spiral-arm-count": (["1", "2", "3", "4", "more-than-4", "cant-tell"], "has-spiral-arms_yes"),
}

_CANDELS = {
    "smooth-or-featured": (["smooth", "features", "artifact"], None),
    "how-rounded": (["completely", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "clumpy-appearance": (["yes", "no"], "smooth-or-featured_features"),
    "disk-edge-on": (["yes", "no"], "clumpy-appearance_no"),
    "edge-on-bulge": (["yes", "no"], "disk-edge-on_yes"),
    "bar": (["yes", "no"], "disk-edge-on_no"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "spiral-winding": (["tight", "medium", "loose"], "disk-edge-on_no"),
    "spiral-arm-count": (["1", "2", "3", "4", "5-plus", "cant-tell"], "disk-edge-on_no"),
    "bulge-size": (["none", "obvious", "dominant"], "disk-edge-on_no"),
    "merging": (["merger", "tidal-debris", "both", "neither"], None),
}

_HUBBLE = {
    "smooth-or-featured": (["smooth", "features", "artifact"], None),
    "how-rounded": (["completely", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "clumpy-appearance": (["yes", "no"], "smooth-or-featured_features"),
    "disk-edge-on": (["yes", "no"], "clumpy-appearance_no"),
    "bulge-shape": (["rounded", "boxy", "none"], "disk-edge-on_yes"),
    "bar": (["yes", "no"], "disk-edge-on_no"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "spiral-winding": (["tight", "medium", "loose"], "disk-edge-on_no"),
    "spiral-arm-count": (["1", "2", "3", "4", "5-plus", "cant-tell"], "disk-edge-on_no"),
    "bulge-size": (["none", "just-noticeable", "obvious", "dominant"], "disk-edge-on_no"),
    "galaxy-symmetrical": (["yes", "no"], "clumpy-appearance_yes"),
    "clumps-embedded-larger-object": (["yes", "no"], "clumpy-appearance_yes"),
}

_HUBBLE_V2 = {  # GZ Hubble without the clump questions (GZ Evo v2)
    "smooth-or-featured": (["smooth", "features", "artifact"], None),
    "how-rounded": (["completely", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_features"),
    "bulge-shape": (["rounded", "boxy", "none"], "disk-edge-on_yes"),
    "bar": (["yes", "no"], "disk-edge-on_no"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "spiral-winding": (["tight", "medium", "loose"], "disk-edge-on_no"),
    "spiral-arm-count": (["1", "2", "3", "4", "5-plus", "cant-tell"], "disk-edge-on_no"),
    "bulge-size": (["none", "just-noticeable", "obvious", "dominant"], "disk-edge-on_no"),
}

_COSMIC_DAWN = {  # GZ Cosmic Dawn (HSC): DR5's tree, 'artifact' renamed 'problem', and three questions added
    **_DECALS_DR5,
    "smooth-or-featured": (["smooth", "featured-or-disk", "problem"], None),
    "clumps": (["yes", "no"], "disk-edge-on_no"),
    "problem": (["star", "artifact", "zoom"], "smooth-or-featured_problem"),
    "artifact": (["satellite", "scattered", "diffraction", "ray", "saturation", "other"], "problem_artifact"),
}

_EUCLID = {  # GZ Euclid: Cosmic Dawn's tree with a 'ghost' artifact
    **_COSMIC_DAWN,
    "artifact": (["satellite", "scattered", "diffraction", "ray", "saturation", "other", "ghost"], "problem_artifact"),
}

_JWST = {
    "smooth-or-featured": (["smooth", "featured-or-disk", "star-artifact-zoom"], None),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "bar": (["strong", "weak", "no"], "disk-edge-on_no"),
    "bulge-size": (["dominant", "large", "moderate", "small", "none"], "disk-edge-on_no"),
    "how-rounded": (["round", "in-between", "cigar-shaped"], "smooth-or-featured_smooth"),
    "edge-on-bulge": (["boxy", "none", "rounded"], "disk-edge-on_yes"),
    "spiral-winding": (["tight", "medium", "loose"], "has-spiral-arms_yes"),
    "spiral-arm-count": (["1", "2", "3", "4", "more-than-4", "cant-tell"], "has-spiral-arms_yes"),
    "clumps": (["yes", "no"], None),
    "merging": (["none", "minor-disturbance", "major-disturbance", "merger"], None),
    "problem": (["star", "artifact", "bad-zoom"], "smooth-or-featured_star-artifact-zoom"),
}

_JWST_COSMOS = {q: v for q, v in _JWST.items() if q != "how-rounded"}  # COSMOS-Web: no how-rounded question

_RINGS = {"ring": (["yes", "no"], None)}

# ---- zoobot-tf's own trees (not in Zoobot)

# The published GZ2 tree (Willett et al. 2013, tasks t01..t11, 37 answers), with the real dependencies.
_GZ2_WILLETT = {
    "smooth-or-featured": (["smooth", "featured-or-disk", "star-or-artifact"], None),
    "disk-edge-on": (["yes", "no"], "smooth-or-featured_featured-or-disk"),
    "bar": (["yes", "no"], "disk-edge-on_no"),
    "has-spiral-arms": (["yes", "no"], "disk-edge-on_no"),
    "bulge-size": (["no", "just-noticeable", "obvious", "dominant"], "disk-edge-on_no"),
    "something-odd": (["yes", "no"], None),
    "how-rounded": (["round", "in-between", "cigar"], "smooth-or-featured_smooth"),
    "odd-feature": (["ring", "lens-or-arc", "disturbed", "irregular", "other", "merger", "dust-lane"],
                    "something-odd_yes"),
    "bulge-shape": (["round", "boxy", "no-bulge"], "disk-edge-on_yes"),
    "spiral-winding": (["tight", "medium", "loose"], "has-spiral-arms_yes"),
    "spiral-arm-count": (["1", "2", "3", "4", "more-than-4", "cant-tell"], "has-spiral-arms_yes"),
}

# GZ Hubble and CANDELS with the clump-count question that Zoobot leaves out (commented out in its
# label metadata: a clump count has several parent answers in the real trees). Extensions, never under
# Zoobot's names.
_CLUMP_COUNT = (["1", "2", "3", "4", "5-plus", "cant-tell"], "clumpy-appearance_yes")
_HUBBLE_CLUMPS = {**{q: v for q, v in list(_HUBBLE.items())[:3]}, "clump-count": _CLUMP_COUNT,
                  **{q: v for q, v in list(_HUBBLE.items())[3:]}}
_CANDELS_CLUMPS = {**{q: v for q, v in list(_CANDELS.items())[:3]}, "clump-count": _CLUMP_COUNT,
                   **{q: v for q, v in list(_CANDELS.items())[3:]}}

# Galaxy Zoo 1: one question, one vote per galaxy in the public single-class tables (N=1: categorical).
_GZ1 = {
    "gz1-class": (["elliptical", "clockwise-spiral", "anticlockwise-spiral", "edge-on", "dont-know", "merger"],
                  None),
}


def _from_table(name: str, table: Mapping[str, tuple[list[str], str | None]]) -> Schema:
    return Schema(name, {q: a for q, (a, _) in table.items()}, {q: d for q, (_, d) in table.items()})


# name: (tree, campaign suffix of its ortho variant or None)
_TREES = {
    "gz_decals_dr5": (_DECALS_DR5, "-dr5"),
    "gz_decals_dr8": (_DECALS_DR5, "-dr8"),  # same tree as DR5
    "gz_desi": (_DECALS_DR5, None),
    "gz_decals_dr12": (_DECALS_DR12, "-dr12"),
    "gz2": (_GZ2, "-gz2"),
    "gz_ukidss": (_GZ2, "-ukidss"),
    "gz_candels": (_CANDELS, "-candels"),
    "gz_hubble": (_HUBBLE, "-hubble"),
    "gz_hubble_v2": (_HUBBLE_V2, "-hubble"),
    "gz_cosmic_dawn": (_COSMIC_DAWN, "-cd"),
    "gz_euclid": (_EUCLID, "-euclid"),
    "gz_jwst": (_JWST, "-jwst"),
    "gz_jwst_cosmos": (_JWST_COSMOS, "-jwst"),
    "gz_rings": (_RINGS, None),
    "gz2_willett": (_GZ2_WILLETT, None),
    "gz_hubble_clumps": (_HUBBLE_CLUMPS, "-hubble"),
    "gz_candels_clumps": (_CANDELS_CLUMPS, "-candels"),
    "gz1": (_GZ1, None),
}

# combined heads (Zoobot's GZ Evo): (name, ortho trees in order)
_COMBINED = {
    "gz_decals_all_ortho": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8"),
    "gz_evo_v1": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8", "gz2", "gz_candels", "gz_hubble",
                  "gz_cosmic_dawn"),
    "gz_evo_v1_public": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8", "gz2", "gz_candels", "gz_hubble"),
    "gz_evo_v2": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8", "gz2", "gz_candels", "gz_hubble_v2",
                  "gz_cosmic_dawn", "gz_euclid"),
    "gz_evo_v2_public": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8", "gz2", "gz_candels",
                         "gz_hubble_v2"),
    "gz_evo_v1_clumps": ("gz_decals_dr12", "gz_decals_dr5", "gz_decals_dr8", "gz2", "gz_candels_clumps",
                         "gz_hubble_clumps", "gz_cosmic_dawn"),  # zoobot-tf's GZ Evo v1 before issue 22
}


def _builtin_schemas() -> dict[str, Schema]:
    schemas = {}
    for name, (table, suffix) in _TREES.items():
        schemas[name] = _from_table(name, table)
        if suffix:
            schemas[f"{name}_ortho"] = schemas[name].with_suffix(suffix, name=f"{name}_ortho")
    for name, parts in _COMBINED.items():
        schemas[name] = Schema.combine(name, [schemas[f"{p}_ortho"] for p in parts])
    return schemas


BUILTIN_SCHEMAS: dict[str, Schema] = _builtin_schemas()

# Zoobot's variable names (galaxy_datasets.shared.label_metadata, without the _pairs suffix) -> zoobot-tf's
ZOOBOT_NAMES = {
    "candels": "gz_candels", "candels_ortho": "gz_candels_ortho", "cosmic_dawn": "gz_cosmic_dawn",
    "cosmic_dawn_ortho": "gz_cosmic_dawn_ortho", "decals_all_campaigns_ortho": "gz_decals_all_ortho",
    "decals_dr12_ortho": "gz_decals_dr12_ortho", "decals_dr5_ortho": "gz_decals_dr5_ortho",
    "decals_dr8_ortho": "gz_decals_dr8_ortho", "desi": "gz_desi", "euclid": "gz_euclid",
    "euclid_ortho": "gz_euclid_ortho", "gz2_ortho": "gz2_ortho", "gz_evo_v1": "gz_evo_v1",
    "gz_evo_v1_public": "gz_evo_v1_public", "gz_evo_v2": "gz_evo_v2", "gz_evo_v2_public": "gz_evo_v2_public",
    "hubble": "gz_hubble", "hubble_ortho": "gz_hubble_ortho", "hubble_v2": "gz_hubble_v2",
    "hubble_v2_ortho": "gz_hubble_v2_ortho", "jwst_cosmos_ortho": "gz_jwst_cosmos_ortho",
    "jwst_ortho": "gz_jwst_ortho", "rings": "gz_rings", "ukidss_ortho": "gz_ukidss_ortho",
}

# Aliases users reach for (and Zoobot's names, with or without _pairs).
_ALIASES = {"decals": "gz_decals_dr5", "gz_decals": "gz_decals_dr5", "dr5": "gz_decals_dr5",
            "dr8": "gz_decals_dr8", "dr12": "gz_decals_dr12", "hsc": "gz_cosmic_dawn", "jwst": "gz_jwst",
            "gz_decals_all_campaigns_ortho": "gz_decals_all_ortho",
            **ZOOBOT_NAMES, **{f"{k}_pairs": v for k, v in ZOOBOT_NAMES.items()}}


def list_schemas() -> list[str]:
    return sorted(BUILTIN_SCHEMAS)


def schemas_with_columns(columns) -> list[str]:
    """The built-in schemas whose every label column is among ``columns`` (a catalog's), largest first: what a
    catalog that does not match the schema it was given could be read with."""
    have = {str(c) for c in columns}
    return [name for _, name in sorted((-s.n_answers, name) for name, s in BUILTIN_SCHEMAS.items()
                                       if set(s.label_cols) <= have)]


def get_schema(name_or_schema: "str | Path | Mapping | Schema") -> Schema:
    """A built-in schema by name, a Schema, a dict, or a path to a ``.yaml``/``.json`` file."""
    if isinstance(name_or_schema, Schema):
        return name_or_schema
    if isinstance(name_or_schema, Mapping):
        return Schema.from_dict(name_or_schema)
    key = str(name_or_schema)
    if key in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[key]
    if key in _ALIASES:
        return BUILTIN_SCHEMAS[_ALIASES[key]]
    path = Path(key)
    if path.suffix.lower() in (".yaml", ".yml") and path.exists():
        return Schema.from_yaml(path)
    if path.suffix.lower() == ".json" and path.exists():
        return Schema.from_dict(json.loads(path.read_text()))
    raise KeyError(
        f"Unknown schema. Received: schema={key!r}. Built-in schemas: {', '.join(list_schemas())}; "
        f"or pass a path to a .yaml/.json schema file."
    )
