"""The CUDA kernels of `fft_c2c`, `fft_r2c` and `fft_c2r` (jitgrad/primitives/fft.py): the
discrete Fourier transform of any length along any axis, one transform line per
grid-stride loop iteration.

On the CPU these primitives call NumPy's pocketfft loops; here every line is transformed
by generated code in the same way pocketfft plans it:

- A length n whose largest prime factor p is small (p * p <= n, n < 50, or Bluestein
  would cost more: `line_plan`, pocketfft's cost rule) is a mixed-radix Stockham
  transform of n itself: butterflies of 5, 3 and 2 unrolled (the stages of the `fft`
  kernel, fft.py, with pocketfft's symmetric butterflies: y_q and y_(R-q) from the sums
  and differences of v_r and v_(R-r), half the products, the roots correctly rounded
  constants), and for every other prime factor R a *generic stage*: each of its n / R butterflies is a direct R-point DFT, O(n R) work, whose
  terms x_r w^(r e) each use one root read from the table (the twiddle and the
  butterfly's root are one power of w), so each term is rounded once.
- Other lengths by Bluestein's chirp transform: X_k = c_k sum_j (x_j c_j) conj(c_(k-j)),
  c_j = exp(-i pi j^2 / n), a circular convolution of length m (the smallest 2-3-5
  smooth m >= 2n - 1) done by two Stockham transforms of length m, the second of the
  conjugate (conj . fft . conj is the unscaled inverse) and the kernel's transform, /m,
  a compile-time constant.

Every root of unity is computed at compile time in the widest float NumPy has, from a
fraction of a turn reduced exactly to the first octant (`_roots_wide`; the chirp's j^2
reduced mod 2n), and rounded once to the dtype: correctly rounded (the `fft` kernel's
float64 `roots_of_unity`, from unreduced angles, is off by up to about 4 eps). Bluestein's kernel is
transformed in that wide type too. The arithmetic is in the dtype, as pocketfft's. The backward direction is
conj . forward . conj (the negations are exact, and the products are the same ones
pocketfft's backward passes compute).

Per line: the line is read (strided: the axis's elements are `after` apart, the product
of the extents behind it) into the first of the line's two scratch rows of `length`
complex values in the workspace (every line's rows interleaved element by element, so a
warp's loads and stores are coalesced: fft.py's `Row`), then transformed by ping-ponging
between the rows, then written out strided, times `scale` (NumPy's factor, in the dtype):

- fft_c2c: n complex values in, n out;
- fft_r2c: n real values in (imaginary parts 0), the n // 2 + 1 non-negative frequencies out;
- fft_c2r: the Hermitian spectrum completed from its n // 2 + 1 values (X_(n-k) =
  conj(X_k)), the imaginary parts of the zero and (even n) Nyquist terms ignored, as
  pocketfft's C2R does; transformed backward; the real parts out.

Real transforms are complex ones of the completed or zero-extended line (twice the work
of a packed real transform, and no other rounding). Workspace: lines x 2 rows x length
complex values (4x the operand for c2c, about 8-10x with Bluestein). Every address is a compile-time
affine function of the line and loop indices, all inside the operand, the result, the
tables or the line's scratch rows (tests/test_cuda_fft.py checks every access).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from jitgrad.ir import DType
from jitgrad.primitives.fft import RADICES
from ..cpu.llvm_support import index
from .fft import Row, _stage as _unrolled_stage


# --------------------------------------------------------------------------- planning

def prime_factors(n: int) -> list[int]:
    """The prime factors of `n`, ascending, with multiplicity."""
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


def smooth_length_at_least(n: int) -> int:
    """The smallest m >= n whose prime factors are 2, 3 and 5."""
    m = max(n, 1)
    while not _smooth(m):
        m += 1
    return m


def _smooth(m: int) -> bool:
    for radix in RADICES:
        while m % radix == 0:
            m //= radix
    return m == 1


def _cost(n: int) -> float:
    """pocketfft's cost guess: n times the sum of the prime factors, those above 5
    (generic butterflies) weighted by 1.1."""
    return n * sum(f if f <= 5 else 1.1 * f for f in prime_factors(n))


BLUESTEIN_FUDGE = 1.5
"""pocketfft's factor on Bluestein's cost (two transforms of length m and the products)."""


@dataclass(frozen=True)
class LinePlan:
    """How a line of `n` values is transformed: a Stockham transform of `length` (n
    itself, or Bluestein's convolution length m) with these stages' radices."""
    n: int
    length: int
    radices: tuple[int, ...]

    @property
    def bluestein(self) -> bool:
        return self.length != self.n


def _stockham_radices(n: int) -> tuple[int, ...]:
    """The unrolled radices (5, 3, 2: the `fft` kernel's order) first, then the other
    primes ascending (generic stages); empty for n = 1."""
    factors = prime_factors(n)
    unrolled = [r for r in RADICES for _ in range(factors.count(r))]
    return tuple(unrolled + [f for f in factors if f not in RADICES])


@functools.lru_cache(maxsize=256)
def line_plan(n: int) -> LinePlan:
    """pocketfft's choice: a direct mixed-radix transform when n < 50 or its largest prime
    factor p has p * p <= n, else Bluestein where its guessed cost (times
    BLUESTEIN_FUDGE) is below the direct transform's."""
    if n < 1:
        raise ValueError(f"an FFT of length {n} is not defined")
    largest = max(prime_factors(n), default=1)
    if n >= 50 and largest * largest > n:
        m = smooth_length_at_least(2 * n - 1)
        if BLUESTEIN_FUDGE * 2 * _cost(m) < _cost(n):
            return LinePlan(n, m, _stockham_radices(m))
    return LinePlan(n, n, _stockham_radices(n))


_QUARTER_PI = np.longdouble("0.785398163397448309615660845819875720995")


@functools.lru_cache(maxsize=8)       # 32 bytes per root: a few long transforms' worth
def _roots_wide(n: int) -> np.ndarray:
    """exp(-2 pi i k / n) for k < n as (real, imaginary) pairs in the platform's widest
    float (x87 extended on x86-64: 11 bits beyond float64): the angle's fraction of a
    turn is reduced exactly, in integers, to phi in [0, pi/4] (8k = octant n + rem), whose
    cosine and sine are mapped back by the octant's symmetry. So every root is the
    correctly rounded value once rounded to float64 or float32 (to a thousandth of an ulp),
    quarter turns are exact, and w^(n-k) is exactly conj(w^k)."""
    k = np.arange(n, dtype=np.int64)
    octant, rem = np.divmod(8 * k, n)
    odd = octant % 2 == 1
    phi = _QUARTER_PI * np.where(odd, n - rem, rem).astype(np.longdouble) / np.longdouble(n)
    c, s = np.cos(phi), np.sin(phi)
    # (cos, sin) of the angle 2 pi k / n from phi's, per octant 0..7
    cos_of = np.choose(octant, [c, s, -s, -c, -c, -s, s, c])
    sin_of = np.choose(octant, [s, c, c, s, -s, -c, -c, -s])
    roots = np.stack([cos_of, -sin_of], axis=-1) + np.longdouble(0)      # -0.0 becomes +0.0
    roots.setflags(write=False)
    return roots


def exact_roots(n: int, dtype: DType) -> np.ndarray:
    """The Stockham stages' table, exp(-2 pi i k / n) as (real, imaginary) pairs, each
    rounded once from `_roots_wide` to `dtype`."""
    return _roots_wide(n).astype(dtype.numpy)


@functools.lru_cache(maxsize=8)
def bluestein_tables(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(chirp, kernel) as (real, imaginary) pairs in the wide float of `_roots_wide`:
    c_j = exp(-i pi j^2 / n) for j < n (j^2 reduced mod 2n: a root of unity of order 2n,
    so the angle is exact), and the transform of conj(c) extended circularly to length
    m, divided by m (the unscaled inverse's 1/m folded in)."""
    j = np.arange(n, dtype=np.int64)
    chirp = _roots_wide(2 * n)[(j * j) % (2 * n)]
    wide = np.result_type(chirp.dtype, np.complex64)
    c = chirp[:, 0] + wide.type(1j) * chirp[:, 1]
    extended = np.zeros(m, wide)
    extended[:n] = np.conj(c)
    extended[m - n + 1:] = np.conj(c[1:][::-1])
    kernel = np.fft.fft(extended) / m            # in the wide type where NumPy's pocketfft has it
    return chirp, np.stack([kernel.real, kernel.imag], axis=-1)


# --------------------------------------------------------------------------- the kernel

@dataclass(frozen=True)
class _Layout:
    """The op's lines: `lines` = before * after transforms along an axis of `n_in` input
    and `n_out` output elements, whose elements are `after` apart in both buffers."""
    n: int
    n_in: int
    n_out: int
    before: int
    after: int

    @property
    def lines(self) -> int:
        return self.before * self.after


def _layout(op) -> _Layout:
    x, result = op.operands[0], op.results[0]
    axis = op.attrs["axis"]
    in_dims = x.type.shape if op.name == "fft_r2c" else x.type.shape[:-1]
    out_dims = result.type.shape if op.name == "fft_c2r" else result.type.shape[:-1]
    n = op.attrs["n"] if op.name == "fft_c2r" else in_dims[axis]
    return _Layout(n, in_dims[axis], out_dims[axis], math.prod(in_dims[:axis]), math.prod(in_dims[axis + 1:]))


def emit_transform(ec, op) -> None:
    """One parallel launch: a grid-stride loop over the op's lines."""
    x, result = op.operands[0], op.results[0]
    if result.type.size == 0:
        return
    layout = _layout(op)
    plan = line_plan(layout.n)
    dtype = x.type.dtype
    ec.begin_launch(True, layout.lines)
    ctx = ec.ctx
    c_ = ctx.index_const
    src, dst = ec.pointer(x), ec.pointer(result)
    row_reals = 2 * plan.length
    scratch = ec.scratch(layout.lines * 2 * row_reals * dtype.itemsize)
    tables = _Tables(ec, plan, dtype)
    forward = op.attrs.get("forward", op.name == "fft_r2c")
    with ctx.grid_loop(layout.lines, "fft.line") as line:
        if layout.after == 1:
            outer, inner = line, c_(0)
        else:
            outer, inner = ctx.index_div(line, c_(layout.after)), ctx.index_rem(line, c_(layout.after))
        in_base = ctx.index_add(ctx.index_mul(outer, c_(layout.n_in * layout.after)), inner)
        out_base = ctx.index_add(ctx.index_mul(outer, c_(layout.n_out * layout.after)), inner)
        rows = (Row(scratch, line, layout.lines), Row(scratch, ctx.index_add(line, c_(row_reals * layout.lines)),
                                                       layout.lines))
        transform = _LineTransform(ctx, dtype, plan, tables, rows)
        strided = _Strided(ctx, dtype, layout.after)
        _READERS[op.name](transform, strided, src, in_base, layout.n, forward)
        transform.run()
        _WRITERS[op.name](transform, strided, dst, out_base, layout.n, forward, op.attrs["scale"])


class _Tables:
    """The op's compile-time constants, in the dtype, as rows of (re, im) pairs: the
    roots of unity of the Stockham length, and Bluestein's chirp and kernel."""

    def __init__(self, ec, plan: LinePlan, dtype: DType):
        def table(values):
            return Row(ec.constant_buffer(values.astype(dtype.numpy)), index(0))
        self.roots = table(exact_roots(plan.length, dtype)) if plan.radices else None
        self.chirp = self.kernel = None
        if plan.bluestein:
            chirp, kernel = bluestein_tables(plan.n, plan.length)
            self.chirp, self.kernel = table(chirp), table(kernel)


class _Strided:
    """Element k of a line in the operand or result: at base + k * after (complex
    elements are (re, im) pairs of reals)."""

    def __init__(self, ctx, dtype: DType, after: int):
        self.ctx, self.dtype, self.after = ctx, dtype, after

    def _at(self, base, k):
        ctx = self.ctx
        return ctx.index_add(base, k if self.after == 1 else ctx.index_mul(k, ctx.index_const(self.after)))

    def load_real(self, buffer, base, k):
        return self.ctx.load(buffer, self._at(base, k), self.dtype)

    def store_real(self, buffer, base, k, value) -> None:
        self.ctx.store(buffer, self._at(base, k), value, self.dtype)

    def load_complex(self, buffer, base, k):
        return _load_pair(self.ctx, self.dtype, buffer, self.ctx.index_mul(self._at(base, k), self.ctx.index_const(2)))

    def store_complex(self, buffer, base, k, re, im) -> None:
        _store_pair(self.ctx, self.dtype, buffer, self.ctx.index_mul(self._at(base, k), self.ctx.index_const(2)),
                    re, im)


def _load_pair(ctx, dtype, buffer, at):
    return ctx.load(buffer, at, dtype), ctx.load(buffer, ctx.index_add(at, ctx.index_const(1)), dtype)


def _store_pair(ctx, dtype, buffer, at, re, im) -> None:
    ctx.store(buffer, at, re, dtype)
    ctx.store(buffer, ctx.index_add(at, ctx.index_const(1)), im, dtype)


def _times(ctx, a, b):
    """The complex product (a_re b_re - a_im b_im, a_re b_im + a_im b_re)."""
    (ar, ai), (br, bi) = a, b
    return ctx.sub(ctx.mul(ar, br), ctx.mul(ai, bi)), ctx.add(ctx.mul(ar, bi), ctx.mul(ai, br))


class _LineTransform:
    """The forward DFT of one line in its two scratch rows (`Row`s, interleaved with the
    other lines'): `put` its input values, `run`, then `get` its outputs."""

    def __init__(self, ctx, dtype: DType, plan: LinePlan, tables: _Tables, rows: tuple[Row, Row]):
        self.ctx, self.dtype, self.plan, self.tables, self.rows = ctx, dtype, plan, tables, rows
        self.result = 0

    def put(self, k, re, im) -> None:
        """Input value k (an i64 index below n)."""
        if self.plan.bluestein:
            re, im = _times(self.ctx, (re, im), self.tables.chirp.load(self.ctx, self.dtype, k))
        self.rows[0].store(self.ctx, self.dtype, k, re, im)

    def get(self, k):
        """Output value k (below n) as (re, im), once `run` has been emitted."""
        ctx = self.ctx
        re, im = self.rows[self.result].load(ctx, self.dtype, k)
        if self.plan.bluestein:       # conj of the inverse's conj-transform, times the chirp
            re, im = _times(ctx, (re, ctx.neg(im)), self.tables.chirp.load(ctx, self.dtype, k))
        return re, im

    def run(self) -> None:
        ctx, dtype, plan = self.ctx, self.dtype, self.plan
        if not plan.bluestein:
            self.result = self._stockham(0)
            return
        zero = ctx.const_of(0.0, dtype)
        with ctx.loop(plan.length - plan.n, "fft.pad") as j:
            self.rows[0].store(ctx, dtype, ctx.index_add(j, ctx.index_const(plan.n)), zero, zero)
        spectrum = self._stockham(0)
        row = self.rows[spectrum]
        with ctx.loop(plan.length, "fft.convolve") as k:     # conj(spectrum * kernel), in place
            re, im = _times(ctx, row.load(ctx, dtype, k), self.tables.kernel.load(ctx, dtype, k))
            row.store(ctx, dtype, k, re, ctx.neg(im))
        self.result = self._stockham(spectrum)

    def _stockham(self, source: int) -> int:
        """The stages from row `source`, ping-ponging; returns the row holding the result."""
        size = 1
        for radix in self.plan.radices:
            args = (self.ctx, self.dtype, self.tables.roots, self.plan.length, radix, size,
                    self.rows[source], self.rows[1 - source])
            if radix in RADICES:
                _unrolled_stage(*args, butterfly=_symmetric_butterfly)
            else:
                _generic_stage(*args)
            size *= radix
            source = 1 - source
        return source


def _symmetric_butterfly(ctx, v):
    """The DFT of the R values `v` (pairs of registers; R = 2, 3 or 5) as pocketfft's
    butterflies compute it: with s_r = v_r + v_(R-r) and d_r = v_r - v_(R-r),
    y_q, y_(R-q) = v_0 + sum_r s_r cos(2 pi r q / R) +- i sum_r d_r (-sin(2 pi r q / R)),
    half the products of the direct sum, the roots correctly rounded to the dtype."""
    radix = len(v)
    (re0, im0) = v[0]
    if radix == 2:
        (re1, im1) = v[1]
        return [(ctx.add(re0, re1), ctx.add(im0, im1)), (ctx.sub(re0, re1), ctx.sub(im0, im1))]
    half = (radix - 1) // 2
    sums = [(ctx.add(v[r][0], v[radix - r][0]), ctx.add(v[r][1], v[radix - r][1])) for r in range(1, half + 1)]
    diffs = [(ctx.sub(v[r][0], v[radix - r][0]), ctx.sub(v[r][1], v[radix - r][1])) for r in range(1, half + 1)]
    roots = _roots_wide(radix)
    like = re0
    out = [None] * radix
    total_re, total_im = re0, im0
    for s_re, s_im in sums:
        total_re, total_im = ctx.add(total_re, s_re), ctx.add(total_im, s_im)
    out[0] = (total_re, total_im)
    for q in range(1, half + 1):
        even_re, even_im, odd_re, odd_im = re0, im0, None, None
        for r in range(1, half + 1):
            turn = (r * q) % radix
            cosine = ctx.const(float(roots[turn, 0].astype(_register_numpy(like))), like)
            sine = ctx.const(float(roots[turn, 1].astype(_register_numpy(like))), like)
            (s_re, s_im), (d_re, d_im) = sums[r - 1], diffs[r - 1]
            even_re, even_im = ctx.add(even_re, ctx.mul(s_re, cosine)), ctx.add(even_im, ctx.mul(s_im, cosine))
            term_re, term_im = ctx.neg(ctx.mul(d_im, sine)), ctx.mul(d_re, sine)      # i d sin
            odd_re = term_re if odd_re is None else ctx.add(odd_re, term_re)
            odd_im = term_im if odd_im is None else ctx.add(odd_im, term_im)
        out[q] = (ctx.add(even_re, odd_re), ctx.add(even_im, odd_im))
        out[radix - q] = (ctx.sub(even_re, odd_re), ctx.sub(even_im, odd_im))
    return out


def _register_numpy(x):
    """The NumPy float type of a float register (constants are rounded to it once)."""
    return np.float64 if x.type == ir.DoubleType() else np.float32


def _generic_stage(ctx, dtype, table: Row, n: int, radix: int, size: int, reads: Row, writes: Row) -> None:
    """A Stockham stage of prime radix R (fft.py's stage, its butterflies direct DFTs):

        y[(j div N) N R + k + q N] = sum_r x[j + r n/R] w^(r e),   e = k n/(N R) + q n/R,

    for j < n/R, k = j mod N, q < R: the twiddle w^(r k n/(N R)) and the butterfly's root
    exp(-2 pi i r q / R) = w^(r q n/R) are one root of the table, w^(r e mod n), its
    exponent stepped by e and reduced by one subtraction (e < n)."""
    c_ = ctx.index_const
    span, step = n // radix, n // (size * radix)
    total = ctx.local_array(dtype, 2, f"fft.radix{radix}.sum")
    power = ctx.local_array(DType.i64, 1, f"fft.radix{radix}.power")
    zero = ctx.const_of(0.0, dtype)
    with ctx.loop(span, f"fft.radix{radix}") as j:
        k = ctx.index_rem(j, c_(size)) if size > 1 else c_(0)
        first = ctx.index_add(ctx.index_mul(ctx.index_div(j, c_(size)), c_(size * radix)), k)
        with ctx.loop(radix, f"fft.radix{radix}.q") as q:
            exponent = ctx.index_add(ctx.index_mul(k, c_(step)), ctx.index_mul(q, c_(span)))
            ctx.store(total, c_(0), zero, dtype)
            ctx.store(total, c_(1), zero, dtype)
            ctx.store(power, c_(0), c_(0), DType.i64)
            with ctx.loop(radix, f"fft.radix{radix}.r") as r:
                p = ctx.load(power, c_(0), DType.i64)
                term = _times(ctx, reads.load(ctx, dtype, ctx.index_add(j, ctx.index_mul(r, c_(span)))),
                              table.load(ctx, dtype, p))
                ctx.store(total, c_(0), ctx.add(ctx.load(total, c_(0), dtype), term[0]), dtype)
                ctx.store(total, c_(1), ctx.add(ctx.load(total, c_(1), dtype), term[1]), dtype)
                stepped = ctx.index_add(p, exponent)
                wrapped = ctx.index_sub(stepped, c_(n))
                ctx.store(power, c_(0), ctx.select(ctx.index_cmp("<", stepped, c_(n)), stepped, wrapped), DType.i64)
            writes.store(ctx, dtype, ctx.index_add(first, ctx.index_mul(q, c_(size))),
                         ctx.load(total, c_(0), dtype), ctx.load(total, c_(1), dtype))


# --------------------------------------------------------------------------- reading and writing lines

def _conj_unless(forward: bool, ctx, im):
    return im if forward else ctx.neg(im)


def _read_c2c(transform: _LineTransform, strided: _Strided, src, base, n: int, forward: bool) -> None:
    ctx = transform.ctx
    with ctx.loop(n, "fft.read") as k:
        re, im = strided.load_complex(src, base, k)
        transform.put(k, re, _conj_unless(forward, ctx, im))


def _read_r2c(transform: _LineTransform, strided: _Strided, src, base, n: int, forward: bool) -> None:
    ctx = transform.ctx
    zero = ctx.const_of(0.0, transform.dtype)
    with ctx.loop(n, "fft.read") as k:
        transform.put(k, strided.load_real(src, base, k), zero)


def _read_c2r(transform: _LineTransform, strided: _Strided, src, base, n: int, forward: bool) -> None:
    """The Hermitian completion of the n // 2 + 1 values, conjugated (the backward
    transform as conj . forward . conj): X_0 and, for even n, X_(n/2) with imaginary
    part 0; X_k and X_(n-k) = conj(X_k) for 0 < k < n/2."""
    ctx = transform.ctx
    c_ = ctx.index_const
    zero = ctx.const_of(0.0, transform.dtype)
    transform.put(c_(0), strided.load_complex(src, base, c_(0))[0], zero)
    with ctx.loop((n - 1) // 2, "fft.read") as i:
        k = ctx.index_add(i, c_(1))
        re, im = strided.load_complex(src, base, k)
        transform.put(k, re, ctx.neg(im))
        transform.put(ctx.index_sub(c_(n), k), re, im)
    if n % 2 == 0:
        transform.put(c_(n // 2), strided.load_complex(src, base, c_(n // 2))[0], zero)


def _scaled(ctx, value, scale: float):
    return value if scale == 1 else ctx.mul(value, ctx.const(scale, value))


def _write_c2c(transform: _LineTransform, strided: _Strided, dst, base, n: int, forward: bool, scale: float):
    ctx = transform.ctx
    with ctx.loop(n, "fft.write") as k:
        re, im = transform.get(k)
        strided.store_complex(dst, base, k, _scaled(ctx, re, scale), _scaled(ctx, _conj_unless(forward, ctx, im), scale))


def _write_r2c(transform: _LineTransform, strided: _Strided, dst, base, n: int, forward: bool, scale: float):
    ctx = transform.ctx
    with ctx.loop(n // 2 + 1, "fft.write") as k:
        re, im = transform.get(k)
        strided.store_complex(dst, base, k, _scaled(ctx, re, scale), _scaled(ctx, im, scale))


def _write_c2r(transform: _LineTransform, strided: _Strided, dst, base, n: int, forward: bool, scale: float):
    ctx = transform.ctx
    with ctx.loop(n, "fft.write") as k:
        strided.store_real(dst, base, k, _scaled(ctx, transform.get(k)[0], scale))


_READERS = {"fft_c2c": _read_c2c, "fft_r2c": _read_r2c, "fft_c2r": _read_c2r}
_WRITERS = {"fft_c2c": _write_c2c, "fft_r2c": _write_r2c, "fft_c2r": _write_c2r}
