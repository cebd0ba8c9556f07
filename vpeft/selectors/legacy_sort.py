"""numpy's argsort as the GPS authors ran it (numpy < 1.24, their ``np.bool`` rules out newer ones), in pure Python:
the order of tied values decides which entries an all-zero row keeps, so :func:`vpeft.selectors.gps.top_k_per_row`
breaks ties with it."""

from __future__ import annotations


def _less(a: float, b: float) -> bool:
    return a < b or (b != b and a == a)  # numpy's order of floats: NaN after everything


def _legacy_heapsort(v: list, t: list, lo: int, n: int) -> None:
    """numpy's ``aheapsort_`` of ``t[lo:lo + n]`` (indices into ``v``), in place."""

    def get(i):
        return t[lo + i - 1]  # numpy's heap is indexed from 1

    def put(i, x):
        t[lo + i - 1] = x

    def sift_down(tmp, i, n):  # place tmp at heap position i, moving larger children up
        j = i << 1
        while j <= n:
            if j < n and _less(v[get(j)], v[get(j + 1)]):
                j += 1
            if not _less(v[tmp], v[get(j)]):
                break
            put(i, get(j))
            i, j = j, j + j
        put(i, tmp)

    for start in range(n >> 1, 0, -1):
        sift_down(get(start), start, n)
    while n > 1:
        tmp = get(n)
        put(n, get(1))
        n -= 1
        sift_down(tmp, 1, n)


def legacy_argsort(values) -> list[int]:
    """numpy's ``argsort`` (kind ``quicksort``) of a 1-D float sequence as numpy before 1.25 computes it, which the
    authors' ``prune_by_percentile_gradient_perCell`` ran (its ``np.bool`` needs numpy < 1.24): introsort with
    median-of-3 partitions, insertion sort on runs of up to 16, heapsort below ``2 log2 n`` levels; NaN last. Only
    the order of equal values depends on the algorithm (numpy 1.25+ sorts with SIMD kernels on AVX-512, and 2.x
    on AVX2, whose order of ties differs). Plain Python: used only for rows whose top-K boundary is a tie."""
    v = [float(x) for x in values]
    t = list(range(len(v)))
    if len(v) < 2:
        return t
    stack = []
    pl, pr, depth = 0, len(v) - 1, 2 * (len(v).bit_length() - 1)
    while True:
        if depth < 0:
            _legacy_heapsort(v, t, pl, pr - pl + 1)
        else:
            while pr - pl > 15:
                pm = pl + ((pr - pl) >> 1)
                if _less(v[t[pm]], v[t[pl]]):
                    t[pm], t[pl] = t[pl], t[pm]
                if _less(v[t[pr]], v[t[pm]]):
                    t[pr], t[pm] = t[pm], t[pr]
                if _less(v[t[pm]], v[t[pl]]):
                    t[pm], t[pl] = t[pl], t[pm]
                vp = v[t[pm]]
                pi, pj = pl, pr - 1
                t[pm], t[pj] = t[pj], t[pm]
                while True:
                    pi += 1
                    while _less(v[t[pi]], vp):
                        pi += 1
                    pj -= 1
                    while _less(vp, v[t[pj]]):
                        pj -= 1
                    if pi >= pj:
                        break
                    t[pi], t[pj] = t[pj], t[pi]
                t[pi], t[pr - 1] = t[pr - 1], t[pi]
                depth -= 1
                if pi - pl < pr - pi:  # the larger side waits on the stack with the depth reached
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):  # insertion sort (stable)
                vi, pj = t[pi], pi
                while pj > pl and _less(v[vi], v[t[pj - 1]]):
                    t[pj] = t[pj - 1]
                    pj -= 1
                t[pj] = vi
        if not stack:
            return t
        pl, pr, depth = stack.pop()
