"""Indexing and item assignment on traced arrays: values against NumPy, gradients against
central differences (and jacfwd against jacrev), and the errors where NumPy's result
would depend on data or where a write could not be carried through."""
import numpy as np
import pytest

import jitgrad
from jitgrad.errors import IndexingError, JitgradError, UnsupportedOperationError

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 5, 6))
MASK2 = RNG.random((4, 5)) > 0.5
MASK1 = np.array([True, False, True, True, False])

# (name, function of x) read with constant indices; x has shape (4, 5, 6)
READS = [
    ("list", lambda x: x[[0, 2]]),
    ("repeated_negative", lambda x: x[[0, -1, 0, -4]]),
    ("array_2d", lambda x: x[np.array([[0, 1], [2, 3]])]),
    ("middle_axis", lambda x: x[:, [1, 3]]),
    ("ellipsis_last", lambda x: x[..., [0, 5, -1]]),
    ("separated_go_first", lambda x: x[[0, 1], :, [2, 3]]),
    ("int_and_array_separated", lambda x: x[1, :, [2, 3]]),
    ("adjacent_inside", lambda x: x[:, [1, 2], [3, 4]]),
    ("adjacent_broadcast", lambda x: x[:, np.array([[0], [4]]), np.array([1, 2, 5])]),
    ("newaxis_first", lambda x: x[None, [1, 2]]),
    ("newaxis_separates", lambda x: x[[1, 2], None, [0, 1]]),
    ("slice_step_then_array", lambda x: x[::-2, [4, 0]]),
    ("mask_2d", lambda x: x[MASK2]),
    ("mask_middle", lambda x: x[:, MASK1]),
    ("bool_list", lambda x: x[[True, False, True, False]]),
    ("empty", lambda x: x[np.array([], dtype=np.int64)]),
    ("all_three", lambda x: x[[3, 0], [4, 1], [5, 0]]),
    ("take_flat", lambda x: np.take(x, [0, 17, -1])),
    ("take_axis", lambda x: np.take(x, [[1, 0], [2, 2]], axis=1)),
    ("take_along_axis", lambda x: np.take_along_axis(x, np.argsort(np.asarray(X), axis=2)[..., :3], axis=2)),
    ("basic_still_works", lambda x: x[1:, ::-1, 2]),
]


def _finite_difference_check(f, args, wrt=0, eps=1e-6):
    """The gradient of <w, f(args)> for random w, against central differences."""
    args = [np.array(a, dtype=float) if k == wrt else a for k, a in enumerate(args)]
    w = RNG.standard_normal(np.shape(f(*args)))

    def loss(*a):
        return np.sum(f(*a) * w)

    got = jitgrad.grad(loss, argnums=wrt)(*args)
    expected = np.zeros_like(args[wrt])
    for k in range(args[wrt].size):
        plus, minus = [a.copy() if i == wrt else a for i, a in enumerate(args)], \
            [a.copy() if i == wrt else a for i, a in enumerate(args)]
        plus[wrt].flat[k] += eps
        minus[wrt].flat[k] -= eps
        expected.flat[k] = (loss(*plus) - loss(*minus)) / (2 * eps)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name,f", READS, ids=[r[0] for r in READS])
def test_read_matches_numpy(name, f):
    got = jitgrad.jit(f)(X)
    expected = f(X)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name,f", READS[:12:3] + READS[12:14], ids=[r[0] for r in READS[:12:3] + READS[12:14]])
def test_read_gradient(name, f):
    _finite_difference_check(f, [X])


def test_repeated_index_gradient_accumulates():
    g = jitgrad.grad(lambda x: np.sum(x[[1, 1, 1, 0]]))(np.arange(3.0))
    np.testing.assert_array_equal(g, [1.0, 3.0, 0.0])


def test_traced_indices():
    logits = RNG.standard_normal((6, 4))
    labels = np.array([0, 3, 1, 1, -1, 2])

    def cross_entropy(z, y):
        z = z - np.max(z, axis=1, keepdims=True)
        logp = z - np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        return -np.mean(logp[np.arange(z.shape[0]), y])

    np.testing.assert_allclose(jitgrad.jit(cross_entropy)(logits, labels), cross_entropy(logits, labels), rtol=1e-12)
    _finite_difference_check(cross_entropy, [logits, labels])
    table = RNG.standard_normal((7, 3))
    ids = np.array([[0, 6], [6, 2], [3, 3]])
    np.testing.assert_array_equal(jitgrad.jit(lambda e, i: e[i])(table, ids), table[ids])
    _finite_difference_check(lambda e, i: e[i], [table, ids])
    pick = jitgrad.jit(lambda x, i: x[i, :, i])
    np.testing.assert_array_equal(pick(X, np.int64(2)), X[2, :, 2])
    np.testing.assert_array_equal(jitgrad.jit(lambda x, i: np.take(x, i, axis=2))(X, ids - 1), np.take(X, ids - 1, axis=2))


def test_jacfwd_matches_jacrev():
    f = lambda x, i: np.sin(x[i, [0, 2]]) * x[[1, 1], i]   # noqa: E731
    x = RNG.standard_normal((3, 3))
    i = np.array([2, 0])
    np.testing.assert_allclose(jitgrad.jacfwd(f)(x, i), jitgrad.jacrev(f)(x, i), rtol=1e-12)


def test_out_of_range_constant_index_raises_like_numpy():
    with pytest.raises(IndexingError, match="out of bounds"):
        jitgrad.jit(lambda x: x[[0, 4]])(X)
    with pytest.raises(IndexError):
        jitgrad.jit(lambda x: x[:, [-6]])(X)


def test_out_of_range_traced_index_raises_and_negative_ones_wrap():
    x = np.arange(5.0)
    f = jitgrad.jit(lambda x, i: x[i])
    np.testing.assert_array_equal(f(x, np.array([-1, -5, 4, 2])), x[[-1, -5, 4, 2]])
    for bad in ([-1, -7, 2], [9, 2]):
        with pytest.raises(IndexingError, match="out of bounds for axis 0 with size 5"):
            f(x, np.array(bad))


def test_traced_mask_read_names_np_where():
    with pytest.raises(IndexingError, match=r"np\.where") as err:
        jitgrad.jit(lambda x: x[x > 0])(X)
    assert "test_indexing.py" in str(err.value)


def test_inf_and_nan_elsewhere_do_not_leak():
    x = np.array([np.inf, 1.0, np.nan, -2.0])
    np.testing.assert_array_equal(jitgrad.jit(lambda x, i: x[i])(x, np.array([1, 3])), [1.0, -2.0])


# ------------------------------------------------------------------ assignment

def _assign_cases():
    def basic(x, v):
        x = x * 1.0
        x[1] = v[0]
        x[2:, ::-2, 3] = v[:, :3]
        x[..., 0] += 1
        return x

    def repeated(x, v):
        y = x[0, 0] * 1.0
        y[[1, 3, 1]] = v[0, :3]          # the last write to 1 wins
        return y

    def buffered_add(x, v):
        y = x[0, 0] * 1.0
        y[[1, 3, 1]] += v[0, :3]         # applied once per position
        return y

    def add_at(x, v):
        y = x[0, 0] * 1.0
        np.add.at(y, [1, 3, 1], v[0, :3])    # accumulates
        return y

    def masked(x, v):
        y = x * 1.0
        y[MASK2] = v[0, 0]
        y[:, MASK1] = 0.0
        return y

    def traced_mask(x, v):
        y = x * 1.0
        y[x > 0.5] = v[1, 1]
        return y

    def negative_and_newaxis(x, v):
        y = x * 1.0
        y[-1, None, [-1, 0]] = v[:, None, :]
        return y

    return [basic, repeated, buffered_add, add_at, masked, traced_mask, negative_and_newaxis]


V = RNG.standard_normal((2, 6))


@pytest.mark.parametrize("f", _assign_cases(), ids=lambda f: f.__name__)
def test_assignment_matches_numpy_and_differentiates(f):
    np.testing.assert_array_equal(jitgrad.jit(f)(X, V), f(X.copy(), V))
    _finite_difference_check(f, [X, V], wrt=0)
    _finite_difference_check(f, [X, V], wrt=1)


def test_traced_index_assignment():
    def f(x, i, v):
        y = x * 1.0
        y[i] = v                 # i repeats: the last write wins
        y[i[0]] += 10.0
        return y

    x, i, v = np.arange(6.0), np.array([4, 1, 4, -1]), np.array([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(jitgrad.jit(f)(x, i, v), f(x.copy(), i, v))
    _finite_difference_check(f, [x, i, v], wrt=0)
    _finite_difference_check(f, [x, i, v], wrt=2)

    def g(x, i, v):
        y = x * 1.0
        np.add.at(y, i, v)
        return y
    np.testing.assert_array_equal(jitgrad.jit(g)(x, i, v), g(x.copy(), i, v))
    _finite_difference_check(g, [x, i, v], wrt=2)


def test_writes_through_views():
    def f(x):
        y = x * 1.0
        view = y[0:2]
        view[0] = 5.0            # writes y[0]
        inner = view[1, ::2]
        inner += 1.0             # writes y[1, ::2]
        y[1, 0] = -3.0           # the views see it
        return y, view, inner

    for got, expected in zip(jitgrad.jit(f)(X[:, :, 0]), f(X[:, :, 0].copy()), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_write_through_untracked_view_raises():
    def f(x):
        y = x * 1.0
        y.reshape(-1)[0] = 1.0
        return y

    with pytest.raises(UnsupportedOperationError, match="reshape"):
        jitgrad.jit(f)(X)


def test_inplace_same_kind_casting():
    def f(x):
        y = np.zeros_like(x, dtype=np.int64) + 1
        y += x
        return y
    with pytest.raises(JitgradError, match="same_kind"):
        jitgrad.jit(f)(X)


def test_numpy_array_receiving_traced_value_is_an_error():
    def f(x):
        y = np.zeros(3)
        y[0] = x[0, 0, 0]
        return y
    with pytest.raises(UnsupportedOperationError, match="zeros_like") as err:
        jitgrad.jit(f)(X)
    assert "test_indexing.py" in str(err.value)
    assert type(np.zeros(3)) is np.ndarray         # the originals are back after the trace

    def g(x):
        y = np.zeros(3)
        y[0] = 2.0               # constants still work
        return x[0, 0, :3] * y
    np.testing.assert_array_equal(jitgrad.jit(g)(X), g(X))


@pytest.mark.parametrize("mode", ["clip", "wrap"])
def test_take_clip_and_wrap_modes(mode):
    def f(x, i):
        return np.take(x, i, axis=1, mode=mode), np.take(x, [-7, 9, 2], mode=mode)
    i = np.array([[-7, 9], [2, -1]])
    got, want = jitgrad.jit(f)(X, i), f(X, i)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    grad = jitgrad.grad(lambda x: np.sum(np.take(x, i, axis=1, mode=mode)))(X)
    expected = np.zeros_like(X)
    np.add.at(expected, (slice(None), np.clip(i, 0, 4) if mode == "clip" else np.mod(i, 5)), 1.0)
    np.testing.assert_array_equal(grad, expected)


@pytest.mark.parametrize("mode", ["raise", "clip", "wrap"])
def test_choose(mode):
    choices = [np.array([1, 2, 3]), np.array([4.0, 5.0, 6.0]), np.array([[7], [8]])]

    def f(a, c0, c1, c2):
        return np.choose(a, [c0, c1, c2], mode=mode)
    a = np.array([0, 2, 1]) if mode == "raise" else np.array([[-1, 3, 1], [5, 0, -4]])
    got, want = jitgrad.jit(f)(a, *choices), f(a, *choices)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    grad = jitgrad.grad(lambda c1: np.sum(np.choose(np.array([0, 1, 1]), [np.ones(3), c1], mode=mode) ** 2))(
        np.array([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(grad, [0.0, 4.0, 6.0])
    with pytest.raises(IndexingError, match="invalid entry"):
        jitgrad.jit(lambda c: np.choose(np.array([0, 3]), [c, c]))(np.ones(2))
