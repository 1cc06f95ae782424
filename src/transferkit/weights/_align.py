"""Pair two ordered lists of tensors by shape, for checkpoints whose names differ from the model's.

The model's and the checkpoint's tensors are aligned in definition order with a weighted
longest-common-subsequence: only tensors of equal shape can pair; pairs whose name suffixes
agree (``weight``, ``bias``, ``running_mean``...) score higher, so a BatchNorm's statistics
pair with a BatchNorm's statistics. Gaps cost nothing, which tolerates extra or missing tensors
(a different head, an auxiliary branch, ``num_batches_tracked``).

Where several alignments score the same (a run of equal shapes that could shift), the model
tensors whose source differs between them are reported as ambiguous and left unpaired: the
alignment never guesses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Alignment", "align"]

_MATCH = 8  # equal shapes
_SUFFIX = 4  # and the same kind of tensor: weight, bias, running_mean, ...
_NAME = 1  # and the same name once container prefixes and underscores are removed


@dataclass
class Alignment:
    """Index pairs into the two lists, plus what could not be settled."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    # Same kind, same place, different shape: a head of another size.
    mismatched: list[tuple[int, int]] = field(default_factory=list)
    # Model index -> the source indices some optimal alignment gives it (-1: none).
    ambiguous: dict[int, list[int]] = field(default_factory=dict)


def _suffix(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _plain(name: str) -> str:
    return re.sub(r"[_]", "", name.lower())


def align(
    model: list[tuple[str, tuple[int, ...]]],
    source: list[tuple[str, tuple[int, ...]]],
) -> Alignment:
    """Align ``(name, shape)`` lists; returns the pairs that every optimal alignment agrees on."""
    n, m = len(model), len(source)
    suffix_a = [_suffix(k) for k, _ in model]
    suffix_b = [_suffix(k) for k, _ in source]
    plain_a = [_plain(k) for k, _ in model]
    plain_b = [_plain(k) for k, _ in source]
    by_shape: dict[tuple, list[int]] = {}
    for j, (_, shape) in enumerate(source):
        by_shape.setdefault(tuple(shape), []).append(j)

    # score[i] maps j -> pair score, only for equal shapes (sparse: most pairs cannot match).
    score: list[dict[int, int]] = []
    for i, (_, shape) in enumerate(model):
        row = {}
        for j in by_shape.get(tuple(shape), ()):
            row[j] = _MATCH + _SUFFIX * (suffix_a[i] == suffix_b[j]) + _NAME * (plain_a[i] == plain_b[j])
        score.append(row)

    # forward[i][j]: best score aligning model[:i] with source[:j];
    # backward[i][j]: best score aligning model[i:] with source[j:].
    forward = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        prev, cur, row = forward[i - 1], forward[i], score[i - 1]
        for j in range(1, m + 1):
            best = prev[j] if prev[j] > cur[j - 1] else cur[j - 1]
            s = row.get(j - 1)
            if s is not None and prev[j - 1] + s > best:
                best = prev[j - 1] + s
            cur[j] = best
    backward = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        nxt, cur, row = backward[i + 1], backward[i], score[i]
        for j in range(m - 1, -1, -1):
            best = nxt[j] if nxt[j] > cur[j + 1] else cur[j + 1]
            s = row.get(j)
            if s is not None and nxt[j + 1] + s > best:
                best = nxt[j + 1] + s
            cur[j] = best
    total = forward[n][m]

    result = Alignment()
    for i in range(n):
        options = [j for j, s in score[i].items() if forward[i][j] + s + backward[i + 1][j + 1] == total]
        skippable = any(forward[i][j] + backward[i + 1][j] == total for j in range(m + 1))
        if len(options) == 1 and not skippable:
            result.pairs.append((i, options[0]))
        elif options:
            result.ambiguous[i] = sorted(options) + ([-1] if skippable else [])
    result.pairs.sort()
    result.mismatched = _pair_gaps(result.pairs, set(result.ambiguous), suffix_a, suffix_b, model, source)
    return result


def _pair_gaps(pairs, ambiguous, suffix_a, suffix_b, model, source) -> list[tuple[int, int]]:
    """Between consecutive pairs, unpaired tensors of the same kind and rank are a shape mismatch."""
    out = []
    bounds = [(-1, -1), *pairs, (len(model), len(source))]
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        left = [i for i in range(i0 + 1, i1) if i not in ambiguous]
        right = list(range(j0 + 1, j1))
        for i in left:
            for j in right:
                if suffix_a[i] == suffix_b[j] and len(model[i][1]) == len(source[j][1]):
                    out.append((i, j))
                    right.remove(j)
                    break
    return out
