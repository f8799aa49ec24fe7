"""Subsets of a labelled dataset, deterministic by `data.seed`, for CIFAR-10 and any .npz.

- `classes: [cat, dog]`: only these classes, relabelled 0..k-1 in the order given;
- `binary: {positive: cat, negatives_per_positive: r}`: label 1 = cat, label 0 = r images per cat
  drawn evenly from the other classes (those in `classes`, if given);
- `train_per_class` / `test_per_class`: n images per class (with `binary`: n positives).

Which images of a class are drawn depends only on (seed, split, class), so the cats of a
cat-vs-dog subset are the cats of a cat-vs-non-cat subset with the same seed and size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnexp.config import DataConfig
from bnexp.errors import DataError

SPLITS = ("training", "test")


@dataclass(frozen=True)
class Subset:
    train_idx: np.ndarray  # (n,) indices into the full training arrays, ascending
    y_train: np.ndarray  # (n,) int64 labels of the subset
    test_idx: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]  # names of the subset's labels 0..k-1
    binary: bool  # one logit: classes = (non-<positive>, <positive>)


def select(
    y_train: np.ndarray, y_test: np.ndarray, names: list[str], cfg: DataConfig, source: str
) -> Subset:
    """The subset `cfg` asks for, of data whose labels 0..K-1 are named by `names`."""
    if (
        cfg.classes is None
        and cfg.binary is None
        and cfg.train_per_class is None
        and cfg.test_per_class is None
    ):
        return Subset(
            np.arange(len(y_train)), y_train, np.arange(len(y_test)), y_test, tuple(names), False
        )

    def label_of(name: str, key: str) -> int:
        if name not in names:
            raise DataError(
                f"{key}: no class {name!r} in {source} (valid classes: {', '.join(names)})"
            )
        return names.index(name)

    pool = (
        [label_of(n, "data.classes") for n in cfg.classes]
        if cfg.classes
        else list(range(len(names)))
    )
    positive = label_of(cfg.binary.positive, "data.binary.positive") if cfg.binary else None
    if positive is not None and pool == [positive]:
        raise DataError(
            f"data.binary: no classes other than {names[positive]!r} to draw negatives from"
        )
    train_idx, y_tr = _pick(y_train, cfg.train_per_class, 0, pool, positive, names, cfg, source)
    test_idx, y_te = _pick(y_test, cfg.test_per_class, 1, pool, positive, names, cfg, source)
    if positive is not None:
        classes = (f"non-{names[positive]}", names[positive])
    else:
        classes = tuple(names[c] for c in pool)
    return Subset(train_idx, y_tr, test_idx, y_te, classes, positive is not None)


def _pick(
    y: np.ndarray,
    per: int | None,
    split: int,
    pool: list[int],
    positive: int | None,
    names: list[str],
    cfg: DataConfig,
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices ascending, new labels) of one split's subset."""
    per_key = f"data.{'train' if split == 0 else 'test'}_per_class"

    def draw(c: int, n: int | None, key: str = per_key) -> np.ndarray:
        what = f"class {names[c]!r} in the {SPLITS[split]} set of {source}"
        return _draw(np.flatnonzero(y == c), n, cfg.seed, split, c, what, key)

    if positive is not None:
        negatives = [c for c in pool if c != positive]
        positives = draw(positive, per)
        ratio = cfg.binary.negatives_per_positive
        shares = _even_shares(len(positives) * ratio, len(negatives), cfg.seed, split)
        neg_key = (
            f"data.binary.negatives_per_positive ({len(positives)} positives x {ratio} = "
            f"{len(positives) * ratio} negatives from {len(negatives)} classes)"
        )
        idx = np.concatenate(
            [positives, *(draw(c, k, neg_key) for c, k in zip(negatives, shares, strict=True))]
        )
        labels = (y[idx] == positive).astype(np.int64)
    else:
        idx = np.concatenate([draw(c, per) for c in pool])
        relabel = np.full(len(names), -1, dtype=np.int64)  # old label -> position in `classes`
        relabel[pool] = np.arange(len(pool))
        labels = relabel[y[idx]]
    order = np.argsort(idx, kind="stable")  # keep the file's order
    return idx[order], labels[order]


def _draw(
    members: np.ndarray, n: int | None, seed: int, split: int, label: int, what: str, key: str
) -> np.ndarray:
    """n of a class's indices, drawn by (seed, split, label); all of them when n is None."""
    if n is None:
        if len(members) == 0:
            raise DataError(f"{what} has no images")
        return members
    if n > len(members):
        raise DataError(f"{key}: {n} images asked for, but {what} has only {len(members)}")
    rng = np.random.default_rng([seed % 2**64, split, label])  # default_rng takes no negative seeds
    return members[np.sort(rng.permutation(len(members))[:n])]


def _even_shares(total: int, k: int, seed: int, split: int) -> list[int]:
    """`total` split over k classes as evenly as possible; the remainder goes to seeded ones."""
    shares = [total // k] * k
    extra = np.random.default_rng([seed % 2**64, split, 1_000_003]).permutation(k)[: total % k]
    for i in extra:
        shares[i] += 1
    return shares


def subset_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    names: list[str],
    cfg: DataConfig,
    source: str,
):
    """The Dataset of the subset `cfg` asks for: train and test are (x, y) with labels 0..K-1
    named by `names`; x (N, ...) uint8 images or float vectors (bnexp.data.arrays.build)."""
    from bnexp.data.arrays import build

    (x_tr, y_tr), (x_te, y_te) = train, test
    sub = select(y_tr, y_te, names, cfg, source=source)
    return build(
        name,
        x_tr[sub.train_idx],
        sub.y_train,
        x_te[sub.test_idx],
        sub.y_test,
        sub.classes,
        binary=sub.binary,
        standardize=cfg.standardize,
    )
