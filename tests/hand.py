"""Plain-Python reference formulas for the parity tests (no torch: computed by hand, element by element)."""

import math


def softmax(row, T=1.0):
    e = [math.exp(v / T) for v in row]
    return [v / sum(e) for v in e]


def cross_entropy(rows, labels):
    return sum(-math.log(softmax(r)[y]) for r, y in zip(rows, labels)) / len(labels)


def kl(p_rows, q_rows):
    """KL(p || q) summed over classes, averaged over the batch."""
    return sum(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) for p, q in zip(p_rows, q_rows)) / len(p_rows)
