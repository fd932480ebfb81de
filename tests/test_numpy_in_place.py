"""In-place NumPy writers on traced arrays (`.sort`, `.put`, `.resize`, `.partition`,
`np.put`, `np.putmask`, `np.place`, `np.put_along_axis`, `np.fill_diagonal`): compiled
results against NumPy running the same code, aliases and views included; gradients
against central differences; NumPy's refusals as clear errors."""
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import JitgradError

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4))


def _same_as_numpy(fn, *args):
    expected = fn(*[a.copy() for a in args])
    got = jitgrad.jit(fn)(*[a.copy() for a in args])
    for e, g in zip(expected if isinstance(expected, tuple) else (expected,),
                    got if isinstance(got, tuple) else (got,), strict=True):
        e, g = np.asarray(e), np.asarray(g)
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(g, e)


def test_sort_in_place_is_seen_by_aliases_and_views():
    def f(x):
        a = x * 1
        b = a                    # the same array
        row = a[1]               # a basic-indexing view
        t = a.T                  # a transpose view (always a view in NumPy)
        s = np.swapaxes(a[None], 0, 2)
        flat = a.flat
        a.sort()
        return b, row, t, s, flat[5], a

    _same_as_numpy(f, X)


def test_reshape_views_are_stale_after_a_write_to_their_base():
    """NumPy's reshape is a view of a C-contiguous array and a copy of another: which one,
    jitgrad cannot tell, so using the result after a write to its base raises."""
    def c_contiguous(x):
        a = x * 1
        flat = a.reshape(-1)
        a.sort()
        return flat

    def transposed(x):
        a = np.copy(x.T)          # order 'K': Fortran-ordered, so reshape copies
        flat = a.reshape(-1)
        a.sort()
        return flat

    np.testing.assert_array_equal(c_contiguous(X.copy()), np.sort(X).reshape(-1))
    np.testing.assert_array_equal(transposed(X.copy()), np.copy(X.T).reshape(-1))    # NumPy: the old values
    for fn in (c_contiguous, transposed):
        with pytest.raises(JitgradError, match="reshape a copy"):
            jitgrad.jit(fn)(X)

    def unused(x):            # a stale array that is not used again is no error
        a = x * 1
        a.ravel()
        a.sort()
        return a

    _same_as_numpy(unused, X)


def test_sort_of_a_view_writes_into_its_base():
    def f(x):
        a = x * 1
        a[1].sort()
        col = a[:, 2]
        col.sort()
        return a

    _same_as_numpy(f, X)


def test_sort_axis_and_view_refresh_after_other_writes():
    def f(x):
        a = x * 1
        t = a.T
        a.sort(axis=0)
        a += 1
        v = a.view()
        a[0, 0] = 10.0
        return t, v, a.conj() is a

    expected = f(X.copy())
    got = jitgrad.jit(lambda x: f(x)[:2])(X.copy())
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    assert expected[2]


def test_sort_axis_none_is_refused_as_numpy_does():
    def f(x):
        a = x * 1
        a.sort(axis=None)
        return a

    with pytest.raises(TypeError):
        f(X.copy())
    with pytest.raises(JitgradError, match="axis=None"):
        jitgrad.jit(f)(X)


@pytest.mark.parametrize("mode", ["raise", "wrap", "clip"])
def test_put_modes_repeats_and_cycled_values(mode):
    indices = [0, -1, 5, 0] if mode == "raise" else [0, -1, 5, 0, 13, -20]

    def f(x):
        a = x * 1
        a.put(indices, x[1, :3] * 2, mode=mode)
        b = x * 1
        np.put(b, np.array(indices), 7.0, mode=mode)
        return a, b

    _same_as_numpy(f, X)


def test_put_traced_indices_and_integer_target():
    def f(x, i):
        a = (x * 10).astype(np.int64)
        a.put(i, x[0, :2])             # float values cast into the int array, as NumPy
        b = x * 1
        b.put(i, x[2, :2], mode="wrap")
        return a, b

    _same_as_numpy(f, X, np.array([3, 7]))


def test_put_out_of_bounds_is_an_index_error():
    def f(x):
        a = x * 1
        a.put([12], [1.0])
        return a

    with pytest.raises(IndexError):
        f(X.copy())
    with pytest.raises(JitgradError, match="out of bounds"):
        jitgrad.jit(f)(X)


def test_put_gradient_matches_central_differences():
    def f(x):
        a = x * 1
        a.put([0, 5, 0], x[1, :3] ** 2)
        return np.sum(np.sin(a))

    g = jitgrad.grad(f)(X)
    eps = 1e-6
    numeric = np.zeros_like(X)
    for k in range(X.size):
        d = np.zeros(X.size)
        d[k] = eps
        d = d.reshape(X.shape)
        numeric.flat[k] = (f(X + d) - f(X - d)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(5, 3), (2, 2), (12,), (0,), (2, 3, 4), (1, 7, 1)])
def test_resize_cuts_or_zero_extends(shape):
    def f(x):
        a = x.ravel() * 1
        a.resize(shape)
        b = x[None, :1] * 1         # (1, 1, 4): one dimension above 1
        b.resize(shape)
        return a, b

    _same_as_numpy(f, X)


def test_resize_of_a_2d_array_is_refused():
    """Its result is in memory order: NumPy's np.copy(x.T) is Fortran-ordered."""
    def f(x):
        a = np.copy(x.T)
        a.resize((2, 2))
        return a

    assert not np.array_equal(f(X.copy()), np.copy(X.T.copy(order="C")).reshape(-1)[:4].reshape(2, 2))
    with pytest.raises(JitgradError, match="memory order"):
        jitgrad.jit(f)(X)


def test_resize_refused_where_numpy_refuses():
    def aliased(x):
        a = x.ravel() * 1
        b = a           # noqa: F841 - a second reference, as NumPy's refcheck sees
        a.resize((2, 2))
        return a

    def view(x):
        a = x * 1
        a[0].resize((2,))
        return a

    for fn in (aliased, view):
        with pytest.raises(ValueError):
            fn(X.copy())
        with pytest.raises(JitgradError, match="resize"):
            jitgrad.jit(fn)(X)


def test_resize_without_refcheck():
    def f(x):
        a = x.ravel() * 1
        b = a
        a.resize((2, 3), refcheck=False)
        return b

    _same_as_numpy(f, X)


def test_putmask_place_put_along_axis_fill_diagonal():
    def f(x):
        a = x * 1
        np.putmask(a, x > 0, x[0, :3] * 2)        # values by position, cycled
        b = x * 1
        np.place(b, np.eye(3, 4) > 0, [5.0, -5.0])
        c = x * 1
        np.put_along_axis(c, np.argsort(x, axis=1)[:, :2], x[:, :1] * 3, axis=1)
        d = x * 1
        np.put_along_axis(d, np.array([[2, 0, 1, 0]]), x[0], axis=0)
        e = x * 1
        np.fill_diagonal(e, x[0, :2])
        tall = np.concatenate([x, x], axis=0)
        np.fill_diagonal(tall, -1.0, wrap=True)
        cube = np.zeros((3, 3, 3)) + x[0, 0]
        np.fill_diagonal(cube, x[1, 1])
        return a, b, c, d, e, tall, cube

    _same_as_numpy(f, X)


def test_place_with_a_traced_mask_is_refused():
    def f(x):
        a = x * 1
        np.place(a, x > 0, [1.0])
        return a

    with pytest.raises(JitgradError, match="np.putmask"):
        jitgrad.jit(f)(X)


def test_writing_into_a_numpy_array_is_refused():
    def f(x):
        a = np.zeros(4)
        np.put(a, [0], x[0, :1])
        return a

    with pytest.raises(JitgradError, match="make the array traced"):
        jitgrad.jit(f)(X)
