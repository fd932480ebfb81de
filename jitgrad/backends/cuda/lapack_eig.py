"""The CUDA kernel of `eig` for real float64 matrices (xGEEV written out on the
scalar context, one matrix per grid-stride iteration, one thread per matrix; the
algorithm and what it leaves free are described in lapack_qr.py, the family's module)."""
from __future__ import annotations

import math

from ..cpu.llvm_support import I64, index
from .lapack_householder import (Matrix, Program, Vector, apply_left, apply_right, flag, form_q, fortran_sign,
                                 reflector)

_EPS = 2.0 ** -52                    # xLAMCH('P'): the relative spacing of doubles
_SAFE_MIN = 2.0 ** -1022             # xLAMCH('S')
_EXCEPTIONAL_EVERY = 10              # xLAHQR's KEXSH


class _EigWorkspace:
    """One matrix's part of eig's workspace: H (the matrix, then its Schur form), Z (the
    Schur vectors), and vectors of n: balancing scales and permutation, reflector
    scalars, one eigenvector of the Schur form (x) and of A (v), complex as (real,
    imaginary) halves. The eigenvalues are read off the Schur form."""

    FIELDS = ("scale", "tau", "x_re", "x_im", "v_re", "v_im")

    def __init__(self, ec, p: Program, n: int, batch: int):
        self.n = n
        item = p.dtype.itemsize
        self.per_matrix = 2 * n * n + len(self.FIELDS) * n
        self.buffer = ec.scratch(batch * self.per_matrix * item)
        self.p = p

    def bind(self, matrix) -> None:
        p, n = self.p, self.n
        base = p.imul(matrix, self.per_matrix)
        self.h = Matrix(p, self.buffer, base, n)
        self.z = Matrix(p, self.buffer, p.iadd(base, n * n), n)
        for k, name in enumerate(self.FIELDS):
            setattr(self, name, Vector(p, self.buffer, p.iadd(base, 2 * n * n + k * n)))


def _balance(p: Program, w: _EigWorkspace, n: int):
    """xGEBAL('B') on H: rows and columns isolating eigenvalues permuted to the bottom
    and top (their positions kept in `scale`), then the rows and columns of the rest
    scaled by powers of 2 until their norms are close. Returns (ilo, ihi) as variables:
    the rows and columns still to be reduced are ilo..ihi."""
    h, b = w.h, p.b
    k, l = p.var(0, "gebal.k"), p.var(n - 1, "gebal.l")
    done = p.var(flag(False), "gebal.done")

    def swap(i, j, kk, ll):
        """Exchange rows and columns i and j (rows 0..ll of the columns, columns kk.. of the rows)."""
        with p.if_(p.icmp("!=", i, j)):
            with p.range(0, p.iadd(ll, 1), "gebal.swap.col") as r:
                t = h[r, i]
                h[r, i] = h[r, j]
                h[r, j] = t
            with p.range(kk, n, "gebal.swap.row") as c:
                t = h[i, c]
                h[i, c] = h[j, c]
                h[j, c] = t

    changed = p.var(flag(True), "gebal.changed")
    with p.while_(lambda: b.and_(changed.get(), b.not_(done.get())), "gebal.rows"):
        changed.set(flag(False))
        with p.range_down(l.get(), -1, "gebal.row") as i:        # bounds fixed at the loop's entry
            with p.if_(b.not_(done.get())):
                isolated = p.var(flag(True), "gebal.isolated")
                with p.range(0, p.iadd(l.get(), 1), "gebal.row.scan") as j:
                    nonzero = b.and_(p.icmp("!=", i, j), b.fcmp_unordered("!=", h[i, j], p.f(0.0)))
                    isolated.set(b.and_(isolated.get(), b.not_(nonzero)))
                with p.if_(isolated.get()):
                    w.scale[l.get()] = b.sitofp(i, p.t)
                    swap(i, l.get(), k.get(), l.get())
                    changed.set(flag(True))
                    with p.if_else(p.icmp("==", l.get(), 0)) as (last, other):
                        with last:
                            done.set(flag(True))
                        with other:
                            l.set(p.isub(l.get(), 1))
    changed.set(flag(True))
    with p.while_(lambda: b.and_(changed.get(), b.not_(done.get())), "gebal.cols"):
        changed.set(flag(False))
        with p.range(k.get(), p.iadd(l.get(), 1), "gebal.col") as j:
            isolated = p.var(flag(True), "gebal.isolated")
            with p.range(k.get(), p.iadd(l.get(), 1), "gebal.col.scan") as i:
                nonzero = b.and_(p.icmp("!=", i, j), b.fcmp_unordered("!=", h[i, j], p.f(0.0)))
                isolated.set(b.and_(isolated.get(), b.not_(nonzero)))
            with p.if_(isolated.get()):
                w.scale[k.get()] = b.sitofp(j, p.t)
                swap(j, k.get(), k.get(), l.get())
                changed.set(flag(True))
                k.set(p.iadd(k.get(), 1))
    with p.if_(b.not_(done.get())):
        _scale_rows_and_columns(p, w, n, k.get(), l.get())
    with p.if_(done.get()):
        k.set(0)
        l.set(0)
    return k, l


def _scale_rows_and_columns(p: Program, w: _EigWorkspace, n: int, k, l) -> None:
    """xGEBAL's norm reduction of rows and columns k..l (scale[i] holds the factors)."""
    h, b = w.h, p.b
    radix = p.f(2.0)
    sfmin1 = _SAFE_MIN / _EPS
    sfmax1 = 1.0 / sfmin1
    sfmin2, sfmax2 = p.f(sfmin1 * 2.0), p.f(1.0 / (sfmin1 * 2.0))
    with p.range(k, p.iadd(l, 1), "gebal.unit") as i:
        w.scale[i] = p.f(1.0)
    changed = p.var(flag(True), "gebal.noconv")
    with p.while_(lambda: changed.get(), "gebal.scale"):
        changed.set(flag(False))
        with p.range(k, p.iadd(l, 1), "gebal.scale.i") as i:
            c_ssq, r_ssq = p.var(0.0, "gebal.c"), p.var(0.0, "gebal.r")
            ca, ra = p.var(0.0, "gebal.ca"), p.var(0.0, "gebal.ra")
            with p.range(k, p.iadd(l, 1), "gebal.norms") as j:
                c_ssq.set(p.add(c_ssq.get(), p.mul(h[j, i], h[j, i])))
                r_ssq.set(p.add(r_ssq.get(), p.mul(h[i, j], h[i, j])))
            with p.range(0, p.iadd(l, 1), "gebal.ca") as j:
                ca.set(p.max(ca.get(), p.abs(h[j, i])))
            with p.range(k, n, "gebal.ra") as j:
                ra.set(p.max(ra.get(), p.abs(h[i, j])))
            c = p.var(p.sqrt(c_ssq.get()), "gebal.cn")
            r = p.var(p.sqrt(r_ssq.get()), "gebal.rn")
            usable = b.and_(p.fcmp("!=", c.get(), p.f(0.0)), p.fcmp("!=", r.get(), p.f(0.0)))
            with p.if_(usable):
                g = p.var(p.div(r.get(), radix), "gebal.g")
                f = p.var(1.0, "gebal.f")
                s = p.add(c.get(), r.get())

                def grow():
                    return b.and_(b.and_(p.fcmp("<", c.get(), g.get()),
                                         p.fcmp("<", p.max(p.max(f.get(), c.get()), ca.get()), sfmax2)),
                                  p.fcmp(">", p.min(p.min(r.get(), g.get()), ra.get()), sfmin2))
                with p.while_(grow, "gebal.grow"):
                    for v, up in ((f, True), (c, True), (ca, True), (r, False), (g, False), (ra, False)):
                        v.set(p.mul(v.get(), radix) if up else p.div(v.get(), radix))
                g.set(p.div(c.get(), radix))

                def shrink():
                    return b.and_(b.and_(p.fcmp(">=", g.get(), r.get()),
                                         p.fcmp("<", p.max(r.get(), ra.get()), sfmax2)),
                                  p.fcmp(">", p.min(p.min(f.get(), c.get()), p.min(g.get(), ca.get())), sfmin2))
                with p.while_(shrink, "gebal.shrink"):
                    for v, up in ((f, False), (c, False), (g, False), (ca, False), (r, True), (ra, True)):
                        v.set(p.mul(v.get(), radix) if up else p.div(v.get(), radix))
                scale_i = w.scale[i]
                skip = p.fcmp(">=", p.add(c.get(), r.get()), p.mul(p.f(0.95), s))
                skip = b.or_(skip, b.and_(b.and_(p.fcmp("<", f.get(), p.f(1.0)), p.fcmp("<", scale_i, p.f(1.0))),
                                          p.fcmp("<=", p.mul(f.get(), scale_i), p.f(sfmin1))))
                skip = b.or_(skip, b.and_(b.and_(p.fcmp(">", f.get(), p.f(1.0)), p.fcmp(">", scale_i, p.f(1.0))),
                                          p.fcmp(">=", scale_i, p.div(p.f(sfmax1), f.get()))))
                with p.if_(b.not_(skip)):
                    g_inv = p.div(p.f(1.0), f.get())
                    w.scale[i] = p.mul(scale_i, f.get())
                    changed.set(flag(True))
                    with p.range(k, n, "gebal.scal.row") as j:
                        h[i, j] = p.mul(h[i, j], g_inv)
                    with p.range(0, p.iadd(l, 1), "gebal.scal.col") as j:
                        h[j, i] = p.mul(h[j, i], f.get())


def _hessenberg(p: Program, w: _EigWorkspace, n: int, ilo, ihi) -> None:
    """xGEHD2: H = Q^T H Q upper Hessenberg in rows and columns ilo..ihi, reflector j's v
    below H[j + 1, j] and its tau in tau[j] (0 outside ilo..ihi-1)."""
    h = w.h
    with p.range(0, n, "gehrd.tau") as j:
        w.tau[j] = p.f(0.0)
    with p.range(ilo, ihi, "gehd2") as j:
        j1 = p.iadd(j, 1)
        beta, tau = reflector(p, h, j1, p.iadd(ihi, 1), j)
        w.tau[j] = tau
        h[j1, j] = p.f(1.0)
        apply_right(p, h, j, j1, tau, h, 0, p.iadd(ihi, 1), j1, p.iadd(ihi, 1))
        apply_left(p, h, j, tau, h, j1, p.iadd(ihi, 1), j1, n)
        h[j1, j] = beta


def _hessenberg_q(p: Program, w: _EigWorkspace, n: int, ilo, ihi) -> None:
    """xORGHR into Z: the identity outside rows and columns ilo+1..ihi, inside it the
    product of the reflectors (their vectors shifted one column right, xORG2R)."""
    h, z = w.h, w.z
    with p.range(0, n, "orghr.row") as r:
        with p.range(0, n, "orghr.col") as c:
            inside = p.b.and_(p.b.and_(p.icmp(">", c, ilo), p.icmp("<=", c, ihi)), p.icmp(">", r, c))
            inside = p.b.and_(inside, p.icmp("<=", r, ihi))
            unit = p.select(p.icmp("==", r, c), p.f(1.0), p.f(0.0))
            z[r, c] = p.select(inside, h[r, p.imax(p.isub(c, 1), 0)], unit)
    nh = p.isub(ihi, ilo)
    with p.if_(p.icmp(">", nh, 0)):
        corner = p.iadd(ilo, 1)
        sub = Matrix(p, z.buffer, z.at(corner, corner), n)
        taus = Vector(p, w.tau.buffer, p.iadd(w.tau.base, ilo))
        form_q(p, sub, taus, nh, nh, nh)


def _small_reflector(p: Program, alpha, v2, v3):
    """xLARFG on (alpha, v2[, v3]) held in registers (v3 None: two elements): returns
    (beta, tau, v2', v3')."""
    xnorm = p.abs(v2) if v3 is None else p.hypot(v2, v3)
    trivial = p.fcmp("==", xnorm, p.f(0.0))
    beta = p.neg(p.copysign(p.hypot(alpha, xnorm), alpha))
    divisor = p.sub(alpha, beta)
    tau = p.select(trivial, p.f(0.0), p.div(p.sub(beta, alpha), beta))
    beta = p.select(trivial, alpha, beta)
    v2 = p.select(trivial, v2, p.div(v2, divisor))
    v3 = None if v3 is None else p.select(trivial, v3, p.div(v3, divisor))
    return beta, tau, v2, v3


def _rotate(p: Program, a: Matrix, first, cs, sn, along: str, start, stop) -> None:
    """xROT: x' = cs x + sn y, y' = cs y - sn x, where x and y are rows (`along` "row":
    `first`, `first` + 1; columns start..stop-1) or columns of a."""
    with p.range(start, stop, "rot") as k:
        if along == "row":
            x_at, y_at = (first, k), (p.iadd(first, 1), k)
        else:
            x_at, y_at = (k, first), (k, p.iadd(first, 1))
        x, y = a[x_at], a[y_at]
        a[x_at] = p.add(p.mul(cs, x), p.mul(sn, y))
        a[y_at] = p.sub(p.mul(cs, y), p.mul(sn, x))


def _standardize_2x2(p: Program, a, b, c, d):
    """xLANV2: the Schur factorization of a real 2 x 2 block, [a b; c d] = [cs -sn; sn cs]
    [aa bb; cc dd] [cs sn; -sn cs], with aa = dd and bb cc < 0 for complex eigenvalues, cc
    = 0 for real ones. Returns (aa, bb, cc, dd, cs, sn) as variables."""
    bl = p.b
    A, B, C, D = (p.var(x, f"lanv2.{n}") for x, n in ((a, "a"), (b, "b"), (c, "c"), (d, "d")))
    cs, sn = p.var(1.0, "lanv2.cs"), p.var(0.0, "lanv2.sn")
    zero, one, half = p.f(0.0), p.f(1.0), p.f(0.5)
    c_zero = p.fcmp("==", c, zero)
    b_zero = p.fcmp("==", b, zero)
    equal_opposite = bl.and_(p.fcmp("==", p.sub(a, d), zero), p.fcmp("!=", fortran_sign(p, b), fortran_sign(p, c)))
    with p.if_else(c_zero) as (then, otherwise):
        with then:
            pass
        with otherwise:
            with p.if_else(b_zero) as (swap, general):
                with swap:
                    cs.set(zero)
                    sn.set(one)
                    A.set(d)
                    D.set(a)
                    B.set(p.neg(c))
                    C.set(zero)
                with general:
                    with p.if_(bl.not_(equal_opposite)):
                        _lanv2_general(p, A, B, C, D, cs, sn, a, b, c, d)
    return A, B, C, D, cs, sn


def _lanv2_general(p: Program, A, B, C, D, cs, sn, a, b, c, d) -> None:
    bl = p.b
    zero, one, half = p.f(0.0), p.f(1.0), p.f(0.5)
    temp = p.sub(a, d)
    pp = p.mul(half, temp)
    bcmax = p.max(p.abs(b), p.abs(c))
    bcmis = p.mul(p.mul(p.min(p.abs(b), p.abs(c)), fortran_sign(p, b)), fortran_sign(p, c))
    scale = p.max(p.abs(pp), bcmax)
    z = p.add(p.mul(p.div(pp, scale), pp), p.mul(p.div(bcmax, scale), bcmis))
    with p.if_else(p.fcmp(">=", z, p.f(4.0 * _EPS))) as (real, complex_):
        with real:
            z2 = p.add(pp, p.copysign(p.mul(p.sqrt(scale), p.sqrt(z)), pp))
            A.set(p.add(d, z2))
            D.set(p.sub(d, p.mul(p.div(bcmax, z2), bcmis)))
            tau = p.hypot(c, z2)
            cs.set(p.div(z2, tau))
            sn.set(p.div(c, tau))
            B.set(p.sub(b, c))
            C.set(zero)
        with complex_:
            sigma = p.add(b, c)
            tau = p.hypot(sigma, temp)
            cs0 = p.sqrt(p.mul(half, p.add(one, p.div(p.abs(sigma), tau))))
            sn0 = p.mul(p.neg(p.div(pp, p.mul(tau, cs0))), fortran_sign(p, sigma))
            aa = p.add(p.mul(a, cs0), p.mul(b, sn0))
            bb = p.add(p.mul(p.neg(a), sn0), p.mul(b, cs0))
            cc = p.add(p.mul(c, cs0), p.mul(d, sn0))
            dd = p.add(p.mul(p.neg(c), sn0), p.mul(d, cs0))
            a2 = p.add(p.mul(aa, cs0), p.mul(cc, sn0))
            b2 = p.add(p.mul(bb, cs0), p.mul(dd, sn0))
            c2 = p.add(p.mul(p.neg(aa), sn0), p.mul(cc, cs0))
            d2 = p.add(p.mul(p.neg(bb), sn0), p.mul(dd, cs0))
            mean = p.mul(half, p.add(a2, d2))
            A.set(mean)
            D.set(mean)
            B.set(b2)
            C.set(c2)
            cs.set(cs0)
            sn.set(sn0)
            with p.if_(p.fcmp("!=", c2, zero)):
                with p.if_else(p.fcmp("!=", b2, zero)) as (both, b_vanished):
                    with both:
                        with p.if_(p.fcmp("==", fortran_sign(p, b2), fortran_sign(p, c2))):      # real eigenvalues after all
                            sab, sac = p.sqrt(p.abs(b2)), p.sqrt(p.abs(c2))
                            p2 = p.copysign(p.mul(sab, sac), c2)
                            tau2 = p.div(one, p.sqrt(p.abs(p.add(b2, c2))))
                            A.set(p.add(mean, p2))
                            D.set(p.sub(mean, p2))
                            B.set(p.sub(b2, c2))
                            C.set(zero)
                            cs1, sn1 = p.mul(sab, tau2), p.mul(sac, tau2)
                            cs.set(p.sub(p.mul(cs0, cs1), p.mul(sn0, sn1)))
                            sn.set(p.add(p.mul(cs0, sn1), p.mul(sn0, cs1)))
                    with b_vanished:
                        B.set(p.neg(c2))
                        C.set(zero)
                        cs.set(p.neg(sn0))
                        sn.set(cs0)


def _schur(p: Program, w: _EigWorkspace, n: int, ilo, ihi, wantz: bool):
    """xLAHQR (wantt): the Francis double-shift QR iteration on H's rows and columns
    ilo..ihi to real Schur form, the transformations accumulated into Z's rows
    ilo..ihi. Returns an i1 variable: whether every eigenvalue converged."""
    h, z, bl = w.h, w.z, p.b
    ulp = _EPS
    nh = p.iadd(p.isub(ihi, ilo), 1)
    smlnum = p.mul(p.f(_SAFE_MIN / ulp), bl.sitofp(nh, p.t))
    itmax = p.imul(p.imax(nh, 10), 30)
    with p.range(0, n, "lahqr.trash.col") as c:           # reflectors below the subdiagonal
        with p.range(p.iadd(c, 2), n, "lahqr.trash.row") as r:
            h[r, c] = p.f(0.0)
    converged = p.var(flag(True), "lahqr.ok")
    i = p.var(ihi, "lahqr.i")
    kdefl = p.var(0, "lahqr.kdefl")
    with p.while_(lambda: bl.and_(p.icmp(">=", i.get(), ilo), converged.get()), "lahqr.eigenvalue"):
        l = p.var(ilo, "lahqr.l")
        its = p.var(0, "lahqr.its")
        split = p.var(flag(False), "lahqr.split")
        with p.while_(lambda: bl.and_(bl.not_(split.get()), p.icmp("<=", its.get(), itmax)), "lahqr.iteration"):
            l.set(_negligible_subdiagonal(p, h, n, ilo, ihi, l.get(), i.get(), smlnum, ulp))
            with p.if_(p.icmp(">", l.get(), ilo)):
                h[l.get(), p.isub(l.get(), 1)] = p.f(0.0)
            with p.if_else(p.icmp(">=", l.get(), p.isub(i.get(), 1))) as (deflated, sweep):
                with deflated:
                    split.set(flag(True))
                with sweep:
                    kdefl.set(p.iadd(kdefl.get(), 1))
                    shifts = _shifts(p, h, l.get(), i.get(), kdefl.get())
                    m, v = _sweep_start(p, h, l.get(), i.get(), shifts, ulp)
                    _double_shift_sweep(p, w, n, ilo, ihi, l.get(), i.get(), m, v, wantz)
                    its.set(p.iadd(its.get(), 1))
        with p.if_else(split.get()) as (found, failed):
            with found:
                ii = i.get()
                with p.if_(p.icmp("==", l.get(), p.isub(ii, 1))):
                    i1 = p.isub(ii, 1)
                    A, B, C, D, cs, sn = _standardize_2x2(p, h[i1, i1], h[i1, ii], h[ii, i1], h[ii, ii])
                    h[i1, i1], h[i1, ii], h[ii, i1], h[ii, ii] = A.get(), B.get(), C.get(), D.get()
                    _rotate(p, h, i1, cs.get(), sn.get(), "row", p.iadd(ii, 1), n)
                    _rotate(p, h, i1, cs.get(), sn.get(), "column", 0, i1)
                    if wantz:
                        _rotate(p, z, i1, cs.get(), sn.get(), "column", ilo, p.iadd(ihi, 1))
                kdefl.set(0)
                i.set(p.isub(l.get(), 1))
            with failed:
                converged.set(flag(False))
    return converged


def _negligible_subdiagonal(p: Program, h: Matrix, n: int, ilo, ihi, l, i, smlnum, ulp: float):
    """The largest k in l+1..i whose H[k, k-1] is negligible (Ahues and Tisseur's test, as
    xLAHQR), else l."""
    bl = p.b
    found = p.var(l, "lahqr.k")
    searching = p.var(flag(True), "lahqr.searching")
    with p.range_down(i, l, "lahqr.small") as k:
        with p.if_(searching.get()):
            k1 = p.isub(k, 1)
            sub = p.abs(h[k, k1])
            tst = p.add(p.abs(h[k1, k1]), p.abs(h[k, k]))
            left = p.select(p.icmp(">=", p.isub(k, 2), ilo), p.abs(h[k1, p.imax(p.isub(k, 2), 0)]), p.f(0.0))
            below = p.select(p.icmp("<=", p.iadd(k, 1), ihi), p.abs(h[p.imin(p.iadd(k, 1), n - 1), k]), p.f(0.0))
            tst = p.select(p.fcmp("==", tst, p.f(0.0)), p.add(p.add(tst, left), below), tst)
            ab = p.max(sub, p.abs(h[k1, k]))
            ba = p.min(sub, p.abs(h[k1, k]))
            diff = p.abs(p.sub(h[k1, k1], h[k, k]))
            aa = p.max(p.abs(h[k, k]), diff)
            bb = p.min(p.abs(h[k, k]), diff)
            s = p.add(aa, ab)
            fine = p.fcmp("<=", p.mul(ba, p.div(ab, s)), p.max(smlnum, p.mul(p.f(ulp), p.mul(bb, p.div(aa, s)))))
            small = bl.or_(p.fcmp("<=", sub, smlnum), bl.and_(p.fcmp("<=", sub, p.mul(p.f(ulp), tst)), fine))
            with p.if_(small):
                found.set(k)
                searching.set(flag(False))
    return found.get()


def _shifts(p: Program, h: Matrix, l, i, kdefl):
    """xLAHQR's shifts (rt1r, rt1i, rt2r, rt2i): the eigenvalues of the trailing 2 x 2
    block (one of them twice when both are real), or an exceptional shift every 10th
    iteration since the last deflation (from the bottom of the block at every 20th,
    else from its top)."""
    bl = p.b
    i1, i2 = p.isub(i, 1), p.isub(i, 2)
    bottom = p.icmp("==", bl.srem(kdefl, index(2 * _EXCEPTIONAL_EVERY)), index(0))
    top = p.icmp("==", bl.srem(kdefl, index(_EXCEPTIONAL_EVERY)), index(0))
    s_bottom = p.add(p.abs(h[i, i1]), p.abs(h[i1, i2]))
    s_top = p.add(p.abs(h[p.iadd(l, 1), l]), p.abs(h[p.iadd(l, 2), p.iadd(l, 1)]))
    exceptional = bl.or_(bottom, top)
    s_ex = p.select(bottom, s_bottom, s_top)
    h11_ex = p.add(p.mul(p.f(0.75), s_ex), p.select(bottom, h[i, i], h[l, l]))
    h11 = p.select(exceptional, h11_ex, h[i1, i1])
    h21 = p.select(exceptional, s_ex, h[i, i1])
    h12 = p.select(exceptional, p.mul(p.f(-0.4375), s_ex), h[i1, i])
    h22 = p.select(exceptional, h11_ex, h[i, i])
    s = p.add(p.add(p.abs(h11), p.abs(h12)), p.add(p.abs(h21), p.abs(h22)))
    h11, h21, h12, h22 = (p.div(x, s) for x in (h11, h21, h12, h22))
    tr = p.div(p.add(h11, h22), p.f(2.0))
    det = p.sub(p.mul(p.sub(h11, tr), p.sub(h22, tr)), p.mul(h12, h21))
    rtdisc = p.sqrt(p.abs(det))
    complex_ = p.fcmp(">=", det, p.f(0.0))
    r1, r2 = p.add(tr, rtdisc), p.sub(tr, rtdisc)
    nearer = p.select(p.fcmp("<=", p.abs(p.sub(r1, h22)), p.abs(p.sub(r2, h22))), r1, r2)
    real_shift = p.mul(nearer, s)
    rt1r = p.select(complex_, p.mul(tr, s), real_shift)
    rt1i = p.select(complex_, p.mul(rtdisc, s), p.f(0.0))
    zero_block = p.fcmp("==", s, p.f(0.0))
    rt1r = p.select(zero_block, p.f(0.0), rt1r)
    rt1i = p.select(zero_block, p.f(0.0), rt1i)
    return rt1r, rt1i, rt1r, p.neg(rt1i)


def _sweep_start(p: Program, h: Matrix, l, i, shifts, ulp: float):
    """Where the double-shift sweep starts: the largest m in l..i-2 whose bulge would
    leave H[m, m-1] negligible (else l), and the sweep's first vector there."""
    rt1r, rt1i, rt2r, rt2i = shifts
    bl = p.b
    m_found = p.var(l, "lahqr.m")
    v = [p.var(0.0, f"lahqr.v{k}") for k in range(3)]
    searching = p.var(flag(True), "lahqr.msearch")
    with p.range_down(p.isub(i, 2), p.isub(l, 1), "lahqr.start") as m:
        with p.if_(searching.get()):
            m1 = p.iadd(m, 1)
            hmm = h[m, m]
            s = p.add(p.add(p.abs(p.sub(hmm, rt2r)), p.abs(rt2i)), p.abs(h[m1, m]))
            h21s = p.div(h[m1, m], s)
            v1 = p.sub(p.add(p.mul(h21s, h[m, m1]), p.mul(p.sub(hmm, rt1r), p.div(p.sub(hmm, rt2r), s))),
                       p.mul(rt1i, p.div(rt2i, s)))
            v2 = p.mul(h21s, p.sub(p.sub(p.add(hmm, h[m1, m1]), rt1r), rt2r))
            v3 = p.mul(h21s, h[p.iadd(m, 2), m1])
            s = p.add(p.add(p.abs(v1), p.abs(v2)), p.abs(v3))
            v1, v2, v3 = p.div(v1, s), p.div(v2, s), p.div(v3, s)
            for var, x in zip(v, (v1, v2, v3), strict=True):
                var.set(x)
            m_found.set(m)
            mm1 = p.imax(p.isub(m, 1), 0)
            lhs = p.mul(p.abs(h[m, mm1]), p.add(p.abs(v2), p.abs(v3)))
            rhs = p.mul(p.mul(p.f(ulp), p.abs(v1)), p.add(p.add(p.abs(h[mm1, mm1]), p.abs(hmm)), p.abs(h[m1, m1])))
            stop = bl.or_(p.icmp("==", m, l), p.fcmp("<=", lhs, rhs))
            with p.if_(stop):
                searching.set(flag(False))
    return m_found.get(), [x.get() for x in v]


def _double_shift_sweep(p: Program, w: _EigWorkspace, n: int, ilo, ihi, l, i, m, v, wantz: bool) -> None:
    """One implicit double-shift QR sweep over rows m..i: a 3-element reflector makes the
    bulge, later ones chase it down (2 elements for the last row), applied to all of H
    (Schur form wanted) and to Z's rows ilo..ihi."""
    h, z, bl = w.h, w.z, p.b
    v1, v2, v3 = (p.var(x, f"sweep.v{k}") for k, x in enumerate(v))
    with p.range(m, i, "sweep.k") as k:
        three = p.icmp("<", k, p.isub(i, 1))
        with p.if_else(three) as (then3, then2):
            for nr, branch in ((3, then3), (2, then2)):
                with branch:
                    k1 = p.imax(p.isub(k, 1), 0)
                    after_first = p.icmp(">", k, m)
                    with p.if_(after_first):
                        v1.set(h[k, k1])
                        v2.set(h[p.iadd(k, 1), k1])
                        if nr == 3:
                            v3.set(h[p.iadd(k, 2), k1])
                    beta, t1, nv2, nv3 = _small_reflector(p, v1.get(), v2.get(), v3.get() if nr == 3 else None)
                    with p.if_else(after_first) as (chase, start):
                        with chase:
                            h[k, k1] = beta
                            h[p.iadd(k, 1), k1] = p.f(0.0)
                            if nr == 3:
                                with p.if_(p.icmp("<", k, p.isub(i, 1))):
                                    h[p.iadd(k, 2), k1] = p.f(0.0)
                        with start:
                            with p.if_(p.icmp(">", m, l)):
                                h[k, k1] = p.mul(h[k, k1], p.sub(p.f(1.0), t1))
                    vs = [nv2] + ([nv3] if nr == 3 else [])
                    ts = [t1] + [p.mul(t1, x) for x in vs]
                    rows = [k] + [p.iadd(k, r) for r in range(1, nr)]
                    with p.range(k, n, "sweep.left") as j:
                        total = h[k, j]
                        for x, r in zip(vs, rows[1:], strict=True):
                            total = p.add(total, p.mul(x, h[r, j]))
                        for t, r in zip(ts, rows, strict=True):
                            h[r, j] = p.sub(h[r, j], p.mul(total, t))
                    right_end = p.iadd(p.imin(p.iadd(k, 3), i), 1) if nr == 3 else p.iadd(i, 1)
                    targets = [(h, 0, right_end)] + ([(z, ilo, p.iadd(ihi, 1))] if wantz else [])
                    for mat, start_row, end_row in targets:
                        with p.range(start_row, end_row, "sweep.right") as j:
                            total = mat[j, k]
                            for x, r in zip(vs, rows[1:], strict=True):
                                total = p.add(total, p.mul(x, mat[j, r]))
                            for t, r in zip(ts, rows, strict=True):
                                mat[j, r] = p.sub(mat[j, r], p.mul(total, t))


# ----- complex arithmetic on (real, imaginary) pairs of registers

def _cmul(p: Program, a, b):
    return (p.sub(p.mul(a[0], b[0]), p.mul(a[1], b[1])), p.add(p.mul(a[0], b[1]), p.mul(a[1], b[0])))


def _csub(p: Program, a, b):
    return p.sub(a[0], b[0]), p.sub(a[1], b[1])


def _cdiv(p: Program, a, b):
    """a / b by Smith's algorithm (no overflow of |b|^2)."""
    wide = p.fcmp(">=", p.abs(b[0]), p.abs(b[1]))
    ratio_w, ratio_t = p.div(b[1], b[0]), p.div(b[0], b[1])
    denominator_w = p.add(b[0], p.mul(b[1], ratio_w))
    denominator_t = p.add(b[1], p.mul(b[0], ratio_t))
    re_w = p.div(p.add(a[0], p.mul(a[1], ratio_w)), denominator_w)
    im_w = p.div(p.sub(a[1], p.mul(a[0], ratio_w)), denominator_w)
    re_t = p.div(p.add(p.mul(a[0], ratio_t), a[1]), denominator_t)
    im_t = p.div(p.sub(p.mul(a[1], ratio_t), a[0]), denominator_t)
    return p.select(wide, re_w, re_t), p.select(wide, im_w, im_t)


def _cselect(p: Program, cond, a, b):
    return p.select(cond, a[0], b[0]), p.select(cond, a[1], b[1])


def _l1(p: Program, a):
    return p.add(p.abs(a[0]), p.abs(a[1]))


def _solve_2x2(p: Program, c, rhs, smin):
    """xLALN2's 2 x 2 solve c x = rhs (complex 2 x 2 c as [[c00, c01], [c10, c11]]) by
    complete pivoting, a pivot below smin raised to smin."""
    bl = p.b
    m = [[_l1(p, c[r][q]) for q in range(2)] for r in range(2)]
    # the first largest in xLALN2's (column-major) order: (0,0), (1,0), (0,1), (1,1)
    order = [(0, 0), (1, 0), (0, 1), (1, 1)]
    best = m[0][0]
    pr, pq = flag(False), flag(False)
    for r, q in order[1:]:
        larger = p.fcmp(">", m[r][q], best)
        best = p.select(larger, m[r][q], best)
        pr = bl.select(larger, flag(bool(r)), pr)
        pq = bl.select(larger, flag(bool(q)), pq)

    def pick(row_flag, col_flag):
        """c[row][col] where the flags say which (True: index 1)."""
        top = _cselect(p, col_flag, c[0][1], c[0][0])
        low = _cselect(p, col_flag, c[1][1], c[1][0])
        return _cselect(p, row_flag, low, top)

    other_r, other_q = bl.not_(pr), bl.not_(pq)
    u11 = pick(pr, pq)
    u12 = pick(pr, other_q)
    l21 = _cdiv(p, pick(other_r, pq), u11)
    u22 = _csub(p, pick(other_r, other_q), _cmul(p, l21, u12))
    tiny = p.fcmp("<", _l1(p, u22), smin)
    u22 = (p.select(tiny, smin, u22[0]), p.select(tiny, p.f(0.0), u22[1]))
    y_p = _cselect(p, pr, rhs[1], rhs[0])
    y_o = _csub(p, _cselect(p, pr, rhs[0], rhs[1]), _cmul(p, l21, y_p))
    x_o = _cdiv(p, y_o, u22)
    x_p = _cdiv(p, _csub(p, y_p, _cmul(p, u12, x_o)), u11)
    singular = p.fcmp("<", best, smin)          # the whole block below smin: smin times the identity
    x0 = _cselect(p, pq, x_o, x_p)
    x1 = _cselect(p, pq, x_p, x_o)
    x0 = _cselect(p, singular, (p.div(rhs[0][0], smin), p.div(rhs[0][1], smin)), x0)
    x1 = _cselect(p, singular, (p.div(rhs[1][0], smin), p.div(rhs[1][1], smin)), x1)
    return x0, x1


def _eigenvector(p: Program, w: _EigWorkspace, n: int, s, e, pair) -> None:
    """xTREVC's right eigenvector of the Schur form's diagonal block s..e (s = e, or s =
    e - 1 for a complex pair, whose eigenvalue with positive imaginary part it takes),
    by back substitution into x, then v = Z x."""
    h, bl = w.h, p.b
    wr = h[e, e]
    wi = p.select(pair, p.mul(p.sqrt(p.abs(h[s, e])), p.sqrt(p.abs(h[e, s]))), p.f(0.0))
    smin = p.max(p.mul(p.f(_EPS), p.add(p.abs(wr), p.abs(wi))), p.f(_SAFE_MIN * (n / _EPS)))
    with p.range(0, n, "trevc.clear") as k:
        w.x_re[k] = p.f(0.0)
        w.x_im[k] = p.f(0.0)
    upper_larger = p.fcmp(">=", p.abs(h[s, e]), p.abs(h[e, s]))
    pair_re = p.select(upper_larger, p.f(1.0), p.div(p.neg(wi), h[e, s]))
    pair_im = p.select(upper_larger, p.div(wi, h[s, e]), p.f(1.0))
    w.x_re[s] = p.select(pair, pair_re, p.f(1.0))
    w.x_im[e] = p.select(pair, pair_im, p.f(0.0))
    with p.range(0, s, "trevc.rhs") as k:
        w.x_re[k] = p.neg(p.mul(w.x_re[s], h[k, s]))
        w.x_im[k] = p.select(pair, p.neg(p.mul(w.x_im[e], h[k, e])), p.f(0.0))
    j = p.var(p.isub(s, 1), "trevc.j")
    lam = (wr, wi)
    with p.while_(lambda: p.icmp(">=", j.get(), 0), "trevc.block"):
        jj = j.get()
        j0 = p.imax(p.isub(jj, 1), 0)
        two = bl.and_(p.icmp(">", jj, 0), p.fcmp("!=", h[jj, j0], p.f(0.0)))
        with p.if_else(two) as (block2, block1):
            with block2:
                c = [[_csub(p, (h[j0, j0], p.f(0.0)), lam), (h[j0, jj], p.f(0.0))],
                     [(h[jj, j0], p.f(0.0)), _csub(p, (h[jj, jj], p.f(0.0)), lam)]]
                rhs = [(w.x_re[j0], w.x_im[j0]), (w.x_re[jj], w.x_im[jj])]
                x0, x1 = _solve_2x2(p, c, rhs, smin)
                w.x_re[j0], w.x_im[j0] = x0
                w.x_re[jj], w.x_im[jj] = x1
                with p.range(0, j0, "trevc.update2") as k:
                    w.x_re[k] = p.sub(p.sub(w.x_re[k], p.mul(x0[0], h[k, j0])), p.mul(x1[0], h[k, jj]))
                    w.x_im[k] = p.sub(p.sub(w.x_im[k], p.mul(x0[1], h[k, j0])), p.mul(x1[1], h[k, jj]))
                j.set(p.isub(jj, 2))
            with block1:
                d = _csub(p, (h[jj, jj], p.f(0.0)), lam)
                tiny = p.fcmp("<", _l1(p, d), smin)
                d = (p.select(tiny, smin, d[0]), p.select(tiny, p.f(0.0), d[1]))
                x = _cdiv(p, (w.x_re[jj], w.x_im[jj]), d)
                w.x_re[jj], w.x_im[jj] = x
                with p.range(0, jj, "trevc.update1") as k:
                    w.x_re[k] = p.sub(w.x_re[k], p.mul(x[0], h[k, jj]))
                    w.x_im[k] = p.sub(w.x_im[k], p.mul(x[1], h[k, jj]))
                j.set(p.isub(jj, 1))
    with p.range(0, n, "trevc.back.row") as r:
        re, im = p.var(0.0, "trevc.re"), p.var(0.0, "trevc.im")
        with p.range(0, p.iadd(e, 1), "trevc.back.col") as q:
            re.set(p.add(re.get(), p.mul(w.z[r, q], w.x_re[q])))
            im.set(p.add(im.get(), p.mul(w.z[r, q], w.x_im[q])))
        w.v_re[r] = re.get()
        w.v_im[r] = im.get()


def _undo_balancing(p: Program, w: _EigWorkspace, n: int, ilo, ihi) -> None:
    """xGEBAK('B', 'R') on v: rows ilo..ihi scaled back, then the permutation undone."""
    with p.if_(p.icmp("!=", ilo, ihi)):
        with p.range(ilo, p.iadd(ihi, 1), "gebak.scale") as i:
            w.v_re[i] = p.mul(w.v_re[i], w.scale[i])
            w.v_im[i] = p.mul(w.v_im[i], w.scale[i])
    with p.range(0, n, "gebak.permute") as ii:
        outside = p.b.or_(p.icmp("<", ii, ilo), p.icmp(">", ii, ihi))
        with p.if_(outside):
            i = p.select(p.icmp("<", ii, ilo), p.isub(p.isub(ilo, 1), ii), ii)
            k = p.b.fptosi(w.scale[i], I64)
            k = p.imin(p.imax(k, 0), n - 1)
            for part in (w.v_re, w.v_im):
                t = part[i]
                part[i] = part[k]
                part[k] = t


def _norm(p: Program, vector: Vector, n: int):
    """The 2-norm of vector[0..n), scaled so no square overflows."""
    scale = p.var(0.0, "nrm2.scale")
    with p.range(0, n, "nrm2.max") as k:
        scale.set(p.max(scale.get(), p.abs(vector[k])))
    total = p.var(0.0, "nrm2.ssq")
    s = scale.get()
    with p.range(0, n, "nrm2.ssq") as k:
        x = p.div(vector[k], s)
        total.set(p.add(total.get(), p.mul(x, x)))
    return p.select(p.fcmp("==", s, p.f(0.0)), s, p.mul(s, p.sqrt(total.get())))


def _normalize(p: Program, w: _EigWorkspace, n: int, pair) -> None:
    """xGEEV's normalization: unit 2-norm; a complex vector also rotated so that its
    largest component (the first of them) is real, with the sign of its real part."""
    bl = p.b
    scl = p.div(p.f(1.0), p.hypot(_norm(p, w.v_re, n), _norm(p, w.v_im, n)))
    largest, at = p.var(-1.0, "geev.largest"), p.var(0, "geev.at")
    with p.range(0, n, "geev.scale") as k:
        re, im = p.mul(w.v_re[k], scl), p.mul(w.v_im[k], scl)
        w.v_re[k], w.v_im[k] = re, im
        size = p.add(p.mul(re, re), p.mul(im, im))
        larger = p.fcmp(">", size, largest.get())
        largest.set(p.select(larger, size, largest.get()))
        at.set(p.select(larger, k, at.get()))
    with p.if_(pair):
        k = at.get()
        f, g = w.v_re[k], w.v_im[k]
        d = p.hypot(f, g)
        r = p.copysign(d, f)
        g_zero, f_zero = p.fcmp("==", g, p.f(0.0)), p.fcmp("==", f, p.f(0.0))
        cs = p.select(g_zero, p.f(1.0), p.select(f_zero, p.f(0.0), p.div(p.abs(f), d)))
        sn = p.select(g_zero, p.f(0.0), p.select(f_zero, fortran_sign(p, g), p.div(g, r)))
        with p.range(0, n, "geev.rot") as q:
            re, im = w.v_re[q], w.v_im[q]
            w.v_re[q] = p.add(p.mul(cs, re), p.mul(sn, im))
            w.v_im[q] = p.sub(p.mul(cs, im), p.mul(sn, re))
        w.v_im[k] = p.f(0.0)


def emit_eig(ec, op) -> None:
    """xGEEV on each real float64 matrix (see the module's docstring) into the complex
    result: eigenvalues, then with vectors the n x n eigenvector matrix below them."""
    (a,), result = op.operands, op.results[0]
    dtype = a.type.dtype
    n = a.type.shape[-1]
    vectors = op.attrs["vectors"]
    batch = math.prod(a.type.shape[:-2])
    per_result = 2 * ((n + 1) * n if vectors else n)            # floats: (real, imaginary) pairs
    ec.begin_launch(True, batch)
    p = Program(ec, dtype)
    src, out = ec.pointer(a), ec.pointer(result)
    w = _EigWorkspace(ec, p, n, batch)
    bl = p.b
    with ec.ctx.grid_loop(batch, "eig.matrix") as matrix:
        w.bind(matrix)
        source = Matrix(p, src, p.imul(matrix, n * n), n)
        result_base = p.imul(matrix, per_result)
        finite = p.var(flag(True), "eig.finite")
        largest = p.var(0.0, "eig.anrm")
        with p.range(0, n, "eig.copy.row") as r:
            with p.range(0, n, "eig.copy.col") as c:
                x = source[r, c]
                w.h[r, c] = x
                finite.set(bl.and_(finite.get(), p.fcmp("==", p.sub(x, x), p.f(0.0))))
                largest.set(p.max(largest.get(), p.abs(x)))
        ok = p.var(finite.get(), "eig.ok")
        with p.if_(ok.get()):
            ok.set(_eig_of_finite(p, w, n, vectors, largest.get(), out, result_base))
        with p.if_(bl.not_(ok.get())):
            with p.range(0, per_result, "eig.nan") as k:
                p.store(out, p.iadd(result_base, k), p.f(math.nan))


def _eig_of_finite(p: Program, w: _EigWorkspace, n: int, vectors: bool, anrm, out, result_base):
    """The eigen-decomposition of the finite matrix in H into the result; returns an i1:
    whether the QR iteration converged (if not, nothing meaningful was written)."""
    bl = p.b
    small = math.sqrt(_SAFE_MIN) / _EPS
    big = 1.0 / small
    scaled_to = p.select(p.fcmp("<", anrm, p.f(small)), p.f(small), p.f(big))
    rescale = bl.or_(bl.and_(p.fcmp(">", anrm, p.f(0.0)), p.fcmp("<", anrm, p.f(small))),
                     p.fcmp(">", anrm, p.f(big)))
    factor = p.select(rescale, p.div(scaled_to, anrm), p.f(1.0))
    unscale = p.select(rescale, p.div(anrm, scaled_to), p.f(1.0))
    with p.if_(rescale):
        with p.range(0, n, "eig.scale.row") as r:
            with p.range(0, n, "eig.scale.col") as c:
                w.h[r, c] = p.mul(w.h[r, c], factor)
    ilo_var, ihi_var = _balance(p, w, n)
    ilo, ihi = ilo_var.get(), ihi_var.get()
    _hessenberg(p, w, n, ilo, ihi)
    if vectors:
        _hessenberg_q(p, w, n, ilo, ihi)
    converged = _schur(p, w, n, ilo, ihi, vectors)
    with p.if_(converged.get()):
        h = w.h
        with p.range(0, n, "eig.values") as i:
            first = bl.and_(p.icmp("<", i, n - 1), p.fcmp("!=", h[p.imin(p.iadd(i, 1), n - 1), i], p.f(0.0)))
            second = bl.and_(p.icmp(">", i, 0), p.fcmp("!=", h[i, p.imax(p.isub(i, 1), 0)], p.f(0.0)))
            up, down = p.imin(p.iadd(i, 1), n - 1), p.imax(p.isub(i, 1), 0)
            wi_first = p.mul(p.sqrt(p.abs(h[i, up])), p.sqrt(p.abs(h[up, i])))
            wi_second = p.neg(p.mul(p.sqrt(p.abs(h[down, i])), p.sqrt(p.abs(h[i, down]))))
            wi = p.select(first, wi_first, p.select(second, wi_second, p.f(0.0)))
            at = p.iadd(result_base, p.imul(i, 2))
            p.store(out, at, p.mul(h[i, i], unscale))
            p.store(out, p.iadd(at, 1), p.mul(wi, unscale))
            if vectors:
                with p.if_(bl.not_(second)):
                    e = p.select(first, p.iadd(i, 1), i)
                    _eigenvector(p, w, n, i, e, first)
                    _undo_balancing(p, w, n, ilo, ihi)
                    _normalize(p, w, n, first)
                    with p.range(0, n, "eig.vector") as r:
                        row = p.iadd(result_base, p.imul(p.iadd(n, p.imul(r, n)), 2))
                        at_s = p.iadd(row, p.imul(i, 2))
                        p.store(out, at_s, w.v_re[r])
                        p.store(out, p.iadd(at_s, 1), w.v_im[r])
                        with p.if_(first):
                            at_e = p.iadd(at_s, 2)
                            p.store(out, at_e, w.v_re[r])
                            p.store(out, p.iadd(at_e, 1), p.neg(w.v_im[r]))
    return converged.get()
