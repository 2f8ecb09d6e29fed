"""Which channels a segmenter takes and which of its labels make up WT, TC and ET — read from *its* ``dataset.json``.

Models trained on different BraTS conversions agree on the tumour regions but not on the label numbers: this
project (and BraTS 2023) writes 1 = necrotic core (NCR), 2 = oedema (ED), 3 = enhancing tumour (ET); nnU-Net's own
``Dataset137_BraTS21`` conversion writes 1 = ED, 2 = NCR, 3 = ET. The regions, not the numbers, are scored:

* **region-based** ``labels`` (a list value is a region, nnU-Net's BraTS setup): the regions are found by name
  (whole tumour / tumour core / enhancing tumour, or WT / TC / ET), else by nesting (three nested regions:
  largest WT, smallest ET). nnU-Net paints a region-based prediction back into one label map in
  ``regions_class_order``: a voxel gets the value of the *last* painted region that holds it, so in the written
  label map region R is the set of painted values of every region whose labels lie inside R's labels.
* **label-based** ``labels`` (plain integers): mapped by the BraTS label names (necrosis / NCR / non-enhancing,
  oedema / ED / SNFH, enhancing / ET): WT = {NCR, ED, ET}, TC = {NCR, ET}, ET = {ET}.
* ``--seg-label-map 'WT=1,2,3;TC=2,3;ET=3'`` states the label values of the segmenter's output map directly.

Channels are matched through the aliases of :data:`CHANNEL_ALIASES` (T1 / t1n / T1w, T1Gd / T1ce / T1c / t1c,
T2 / t2w, FLAIR / t2f, PD), in order: a segmenter must take the dataset's sequences in the dataset's order.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from codebrain_seg.raw_dataset import channel_names
from evaluation.segmentation.nnunet_setup import SegmenterError

REGION_NAMES = ("WT", "TC", "ET")
# The project's label meaning (raw datasets it writes): 1 NCR, 2 ED, 3 ET.
PROJECT_REGIONS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}

# Canonical sequence -> the names other datasets and nnU-Net conversions give it (compared case-insensitively).
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "T1": ("t1", "t1n", "t1w", "t1-weighted", "native t1"),
    "T1Gd": ("t1gd", "t1ce", "t1c", "t1-gd", "t1 post-contrast", "t1post"),
    "T2": ("t2", "t2w", "t2-weighted"),
    "FLAIR": ("flair", "t2f", "t2-flair", "t2flair"),
    "PD": ("pd", "pdw", "proton density"),
}
_REGION_WORDS: dict[str, tuple[str, ...]] = {
    "WT": ("wholetumor", "wholetumour", "wt", "whole"),
    "TC": ("tumorcore", "tumourcore", "tc", "core"),
    "ET": ("enhancingtumor", "enhancingtumour", "et", "enhancing", "enhancing_tumor"),
}
_LABEL_WORDS: dict[str, tuple[str, ...]] = {
    "NCR": ("ncr", "net", "ncrnet", "necrosis", "necrotic", "necroticcore", "necrotictumorcore", "nonenhancing",
            "nonenhancingtumor", "nonenhancingtumorcore", "necrosisnonenhancing", "ncrnetc", "netc"),
    "ED": ("ed", "edema", "oedema", "peritumoraledema", "peritumouraloedema", "snfh",
           "surroundingnonenhancingflairhyperintensity", "whitematterhyperintensity"),
    "ET": ("et", "enhancing", "enhancingtumor", "enhancingtumour"),
}


def _word(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def canonical_channel(name: str) -> str:
    """The canonical sequence name of a channel name (``t1c`` -> ``T1Gd``); unknown names are returned as given."""
    key = str(name).strip().lower()
    for canonical, aliases in CHANNEL_ALIASES.items():
        if key == canonical.lower() or key in aliases or _word(key) in {_word(a) for a in aliases}:
            return canonical
    return str(name)


def match_channels(model_channels: Sequence[str], dataset_channels: Sequence[str], model: str = "segmenter"
                   ) -> list[dict[str, str]]:
    """Pair the segmenter's channels with the dataset's (same count, same order, through the aliases).

    Returns:
        One ``{"segmenter": name, "dataset": name, "sequence": canonical}`` per channel, in order.

    Raises:
        SegmenterError: naming what was found and what was expected.
    """
    found = [canonical_channel(c) for c in model_channels]
    expected = [canonical_channel(c) for c in dataset_channels]
    if found != expected:
        raise SegmenterError(f"{model} takes channels {list(model_channels)} (read as {found}), but the dataset has "
                             f"{list(dataset_channels)} (read as {expected}): a segmenter must take the dataset's "
                             f"sequences in the dataset's order (aliases: "
                             + "; ".join(f"{k} = {', '.join(v)}" for k, v in CHANNEL_ALIASES.items()) + ")")
    return [{"segmenter": str(m), "dataset": str(d), "sequence": c}
            for m, d, c in zip(model_channels, dataset_channels, found)]


@dataclass(frozen=True)
class RegionMap:
    """The label values of one kind of label map that make up WT, TC and ET, and how they were derived."""

    regions: Mapping[str, tuple[int, ...]]
    source: str

    def masks(self, label: np.ndarray) -> np.ndarray:
        """``(3, X, Y, Z)`` bool masks (WT, TC, ET) of an ``(X, Y, Z)`` label map."""
        label = np.asarray(label)
        return np.stack([np.isin(label, self.regions[name]) for name in REGION_NAMES])

    def to_json(self) -> dict[str, Any]:
        """``{"WT": [...], "TC": [...], "ET": [...], "source": ...}`` for results files."""
        return {**{name: list(self.regions[name]) for name in REGION_NAMES}, "source": self.source}


def _parse_name_map(text: str, names: Sequence[str], example: str) -> dict[str, tuple[int, ...]]:
    """``'A=1,2;B=3'`` -> ``{name: labels}`` with every one of ``names`` given once, labels >= 1 (the
    ``--seg-label-map`` option of the brain and the cardiac evaluations)."""
    parsed: dict[str, tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        name, _, values = part.partition("=")
        name = name.strip().upper()
        try:
            labels = tuple(sorted({int(v) for v in values.split(",") if v.strip()}))
        except ValueError:
            labels = ()
        if name not in names or not labels or min(labels) < 1:
            raise SegmenterError(f"--seg-label-map {text!r}: each entry must be {'|'.join(names)}=<labels >= 1>, "
                                 f"e.g. {example!r}")
        parsed[name] = labels
    if set(parsed) != set(names):
        raise SegmenterError(f"--seg-label-map {text!r} must give {', '.join(names[:-1])} and {names[-1]}, got "
                             f"{sorted(parsed)}")
    return parsed


def parse_label_map(text: str) -> RegionMap:
    """``'WT=1,2,3;TC=2,3;ET=3'`` -> a :class:`RegionMap` (the ``--seg-label-map`` option)."""
    return RegionMap(_parse_name_map(text, REGION_NAMES, "WT=1,2,3;TC=2,3;ET=3"), "--seg-label-map")


def _named(names: Sequence[str], words: Mapping[str, tuple[str, ...]]) -> dict[str, str]:
    """Concept (WT/TC/ET or NCR/ED/ET) -> the declared name that means it (exact word match first)."""
    found: dict[str, str] = {}
    for concept, options in words.items():
        hits = [n for n in names if _word(n) in options]
        if len(hits) == 1:
            found[concept] = hits[0]
    return found


def _region_sets(labels: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Declared name -> label tuple of every non-background entry."""
    return {name: tuple(int(v) for v in (value if isinstance(value, list) else [value]))
            for name, value in labels.items() if (value if isinstance(value, list) else [value]) != [0]}


def _regions_from_labels(labels: Mapping[str, Any], what: str) -> dict[str, str]:
    """WT/TC/ET -> the declared region names of a region-based ``labels``, by name, else by nesting."""
    sets = {name: frozenset(values) for name, values in _region_sets(labels).items()}
    by_name = _named(list(sets), _REGION_WORDS)
    if set(by_name) == set(REGION_NAMES):
        return by_name
    if len(sets) == 3:
        ordered = sorted(sets, key=lambda n: len(sets[n]), reverse=True)
        if sets[ordered[2]] < sets[ordered[1]] < sets[ordered[0]]:
            return dict(zip(REGION_NAMES, ordered))
    raise SegmenterError(f"{what} declares regions {dict(_region_sets(labels))}: WT/TC/ET cannot be told apart "
                         "(expected names such as 'whole tumor', 'tumor core', 'enhancing tumor', or three nested "
                         "regions); pass --seg-label-map 'WT=...;TC=...;ET=...'")


def _labels_by_name(labels: Mapping[str, Any], what: str) -> dict[str, tuple[int, ...]]:
    """WT/TC/ET label values of a label-based ``labels`` through the BraTS label names."""
    plain = {name: int(value) for name, value in labels.items() if not isinstance(value, list) and int(value) != 0}
    named = _named(list(plain), _LABEL_WORDS)
    if set(named) != {"NCR", "ED", "ET"}:
        raise SegmenterError(f"{what} declares labels {labels}: cannot derive WT/TC/ET (expected region-based labels, "
                             "or labels named like necrosis/NCR, edema/ED and enhancing/ET); pass --seg-label-map "
                             "'WT=...;TC=...;ET=...' with the label values of its output")
    ncr, ed, et = (plain[named[k]] for k in ("NCR", "ED", "ET"))
    return {"WT": tuple(sorted({ncr, ed, et})), "TC": tuple(sorted({ncr, et})), "ET": (et,)}


def _is_region_based(labels: Mapping[str, Any]) -> bool:
    return any(isinstance(value, list) for value in labels.values())


def truth_regions(dataset_json: Mapping[str, Any], what: str = "the dataset") -> RegionMap:
    """WT/TC/ET of the label map *files* a ``dataset.json`` describes (a region's list = its label values)."""
    labels = dict(dataset_json.get("labels") or {})
    if not labels:
        return RegionMap(PROJECT_REGIONS, "no labels declared: the project's convention 1 NCR, 2 ED, 3 ET")
    if _is_region_based(labels):
        names = _regions_from_labels(labels, what)
        sets = _region_sets(labels)
        return RegionMap({r: tuple(sorted(sets[names[r]])) for r in REGION_NAMES}, "region-based labels")
    return RegionMap(_labels_by_name(labels, what), "BraTS label names")


def prediction_regions(dataset_json: Mapping[str, Any], label_map: str | None = None, what: str = "the segmenter"
                       ) -> RegionMap:
    """WT/TC/ET of the label maps a segmenter *writes* (its ``dataset.json``; module docstring)."""
    if label_map:
        return parse_label_map(label_map)
    labels = dict(dataset_json.get("labels") or {})
    if not labels or not _is_region_based(labels):
        return RegionMap(_labels_by_name(labels, what), "BraTS label names")
    names = _regions_from_labels(labels, what)
    sets = {name: frozenset(values) for name, values in _region_sets(labels).items()}
    declared = [name for name in labels if name in sets]  # nnU-Net's region order: the order of ``labels``
    order = dataset_json.get("regions_class_order")
    if not order or len(order) != len(declared):
        raise SegmenterError(f"{what} is region-based but its dataset.json has no regions_class_order for its "
                             f"{len(declared)} regions: the label values it writes are unknown")
    painted = dict(zip(declared, (int(v) for v in order)))
    regions = {r: tuple(sorted({painted[n] for n in declared if sets[n] <= sets[names[r]]})) for r in REGION_NAMES}
    return RegionMap(regions, "region-based labels painted in regions_class_order")


def model_channels(dataset_json: Mapping[str, Any]) -> list[str]:
    """The channel names of a ``dataset.json`` (``channel_names`` or nnU-Net's older ``modality``)."""
    return channel_names(dict(dataset_json))


# ---- cardiac structures (missing-slice datasets) ----------------------------------------------------------

CARDIAC_STRUCTURES = ("LV", "RV", "MYO")
# The converter's labels (codebrain_convert_cardiac, ACDC's codes): 1 RV cavity, 2 LV myocardium, 3 LV cavity.
PROJECT_CARDIAC: dict[str, tuple[int, ...]] = {"LV": (3,), "RV": (1,), "MYO": (2,)}
_CARDIAC_WORDS: dict[str, tuple[str, ...]] = {
    "LV": ("lv", "lvc", "lvcavity", "leftventricle", "leftventricular", "leftventricularcavity", "lvbloodpool",
           "lvendo", "lvblood"),
    "RV": ("rv", "rvc", "rvcavity", "rightventricle", "rightventricular", "rightventricularcavity", "rvbloodpool",
           "rvendo", "rvblood"),
    "MYO": ("myo", "mlv", "myocardium", "lvmyocardium", "lvmyo", "leftventricularmyocardium", "lvm", "myocard"),
}


@dataclass(frozen=True)
class StructureMap:
    """The label values of one kind of cardiac label map that are the LV cavity, the RV cavity and the myocardium."""

    structures: Mapping[str, tuple[int, ...]]
    source: str

    def masks(self, label: np.ndarray) -> dict[str, np.ndarray]:
        """``{structure: bool mask}`` of a label map."""
        label = np.asarray(label)
        return {name: np.isin(label, self.structures[name]) for name in CARDIAC_STRUCTURES}

    def to_json(self) -> dict[str, Any]:
        """``{"LV": [...], "RV": [...], "MYO": [...], "source": ...}`` for results files."""
        return {**{name: list(self.structures[name]) for name in CARDIAC_STRUCTURES}, "source": self.source}


def parse_structure_map(text: str) -> StructureMap:
    """``'LV=3;RV=1;MYO=2'`` -> a :class:`StructureMap` (``--seg-label-map`` of a cardiac evaluation)."""
    return StructureMap(_parse_name_map(text, CARDIAC_STRUCTURES, "LV=3;RV=1;MYO=2"), "--seg-label-map")


def cardiac_structures(dataset_json: Mapping[str, Any], label_map: str | None = None, what: str = "the segmenter"
                       ) -> StructureMap:
    """LV / RV / MYO of the label maps a ``dataset.json`` describes, by the label names (``LV``, ``LV cavity``,
    ``left ventricle``, nnU-Net's ACDC ``LVC`` / ``MLV`` / ``RV`` ...); ``label_map`` (``'LV=3;RV=1;MYO=2'``)
    states them directly. Without declared labels: the converter's 1 RV, 2 MYO, 3 LV."""
    if label_map:
        return parse_structure_map(label_map)
    labels = dict(dataset_json.get("labels") or {})
    if not labels:
        return StructureMap(PROJECT_CARDIAC, "no labels declared: the converter's 1 RV, 2 MYO, 3 LV")
    plain = {name: int(value) for name, value in labels.items() if not isinstance(value, list) and int(value) != 0}
    found = _named(list(plain), _CARDIAC_WORDS)
    if set(found) != set(CARDIAC_STRUCTURES) or len({plain[found[s]] for s in CARDIAC_STRUCTURES}) != 3:
        raise SegmenterError(f"{what} declares labels {labels}: cannot tell the LV cavity, RV cavity and myocardium "
                             "apart (expected names such as LV / RV / MYO or 'LV cavity', 'right ventricle', "
                             "'myocardium'); pass --seg-label-map 'LV=...;RV=...;MYO=...'")
    return StructureMap({s: (plain[found[s]],) for s in CARDIAC_STRUCTURES}, "label names")
