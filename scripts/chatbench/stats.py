"""Differences beyond noise (docs/methodology.md, "Noise: when a difference is a
difference"): every ranking the report, compare.py and cross_thread_cost.py print goes
through rank()."""
import itertools
import math
import statistics

ALPHA = 0.05
# Above this many ways to split the pooled repeats, the normal approximation replaces the
# exact enumeration (8 + 8 repeats is 12 870 splits: still exact).
EXACT_SPLITS = 20_000


def median(values):
    """The median of the values that are not None, or None."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def mann_whitney_p(a, b):
    """Two-sided p of the Mann-Whitney U test, exact: U of every way to split the pooled
    values into groups of len(a) and len(b), ties included (a permutation test on U).
    U of a group = the sum of its midranks in the pooled values - n(n+1)/2: the pairs in
    which its value is the larger, ties counting half."""
    n, m = len(a), len(b)
    if not n or not m:
        return 1.0
    ranks = _midranks(list(a) + list(b))
    centre = n * m / 2
    offset = n * (n + 1) / 2
    observed = abs(sum(ranks[:n]) - offset - centre)
    splits = math.comb(n + m, n)
    if splits > EXACT_SPLITS:
        sd = math.sqrt(n * m * (n + m + 1) / 12)
        z = max(observed - 0.5, 0) / sd  # continuity correction
        return math.erfc(z / math.sqrt(2))
    # Midranks are multiples of 0.5: the tolerance only absorbs float error.
    extreme = sum(abs(sum(ranks[i] for i in chosen) - offset - centre) >= observed - 1e-9
                  for chosen in itertools.combinations(range(n + m), n))
    return extreme / splits


def _midranks(values):
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def smallest_p(n, m):
    """The smallest two-sided p the exact test can give with n and m repeats: every value
    of one group beyond every value of the other. 3 vs 3 gives 0.1, 4 vs 4 0.029."""
    return 2 / math.comb(n + m, n) if n and m else 1.0


def can_rank(n, m, alpha=ALPHA):
    return smallest_p(n, m) < alpha


def rank(a, b, lower_is_better=True, alpha=ALPHA):
    """Whether a is better than b beyond the noise of their repeats: (verdict, p) with
    verdict 'a', 'b', 'tied' (the test cannot tell them apart at alpha) or 'too few'
    (too few repeats for any outcome to reach alpha). A caller that makes k tests of one
    question passes ALPHA / k (Bonferroni)."""
    a = [v for v in a if v is not None]
    b = [v for v in b if v is not None]
    if not can_rank(len(a), len(b), alpha):
        return "too few", None
    p = mann_whitney_p(a, b)
    if p >= alpha:
        return "tied", p
    a_lower = statistics.median(a) < statistics.median(b)
    return ("a" if a_lower == lower_is_better else "b"), p


def leading_group(candidates, lower_is_better=True):
    """From {name: [repeat values]}: (best, tied, unranked). best is the name with the best
    median; tied the others the test cannot separate from it; unranked those with too few
    repeats (against best's) for the test to separate anything. Every other name is worse
    than best beyond noise."""
    have = {c: [x for x in v if x is not None] for c, v in candidates.items()}
    have = {c: v for c, v in have.items() if v}
    if not have:
        return None, [], []
    pick = min if lower_is_better else max
    best = pick(have, key=lambda c: statistics.median(have[c]))
    tied, unranked = [], []
    for c, values in have.items():
        if c != best:
            outcome, _p = rank(have[best], values, lower_is_better)
            if outcome == "tied":
                tied.append(c)
            elif outcome == "too few":
                unranked.append(c)
    return best, tied, unranked
