"""Run-time (traced) indices outside their axis raise IndexError as NumPy does, naming the
user's line, on the first call, on the native call path and from several threads; NumPy's
explicit modes (take's clip and wrap, negative indices wrapping once) keep their meaning,
and config.index_bounds="clamp" clamps as JAX does (docs/indexing.md)."""
from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest

import jitgrad
from jitgrad.config import config
from jitgrad.errors import IndexingError, JitgradError
from jitgrad.primitives.gather import index_check_p

N = 5
X = np.arange(N, dtype=np.float64) * 1.5 + 1.0
GOOD = [0, 3, N - 1, -1, -N]
BAD = [N, -N - 1, 2 ** 62, -2 ** 63, 2 ** 63 - 1]


def _line(fn) -> str:
    """'test_index_bounds.py:<line>' of the line marked `# indexed` in fn: where the error
    must point."""
    lines, first = inspect.getsourcelines(fn)
    marked = [first + k for k, text in enumerate(lines) if text.rstrip().endswith("# indexed")]
    assert len(marked) == 1
    return f"test_index_bounds.py:{marked[0]}"


def _getitem(x, i):
    return x[i] * 2.0      # indexed


def _take(x, i):
    return np.take(x, i) + 1.0      # indexed


def _take_along_axis(x, i):
    return np.take_along_axis(x, i, axis=0)      # indexed


def _assign(x, i):
    y = x * 1.0
    y[i] = -7.0      # indexed
    return y


def _augmented(x, i):
    y = x * 1.0
    y[i] += 3.0      # indexed
    return y


def _add_at(x, i):
    y = x * 1.0
    np.add.at(y, i, 2.0)      # indexed
    return y


FORMS = [_getitem, _take, _take_along_axis, _assign, _augmented, _add_at]


def _numpy(form, x, i):
    """The form run by NumPy itself on a copy (so item assignment mutates only the copy)."""
    return form(np.array(x), i)


def _index(k):
    """A 1-d index array holding k and an in-range index."""
    return np.array([k, 1], np.int64)


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_every_form_matches_numpy_in_range_and_raises_out_of_range(form):
    f = jitgrad.jit(form)
    for _ in range(3):                      # first call, second (full code), third (native path)
        for k in GOOD:
            i = _index(k)
            np.testing.assert_array_equal(f(X, i), _numpy(form, X, i))
        for k in BAD:
            i = _index(k)
            with pytest.raises(IndexError):
                _numpy(form, X, i)
            with pytest.raises(IndexingError, match=f"index {k} is out of bounds for axis 0 with size {N}") as err:
                f(X, i)
            assert _line(form) in str(err.value)
    assert f._fast is not None              # the native call path was built and used


def test_zero_dimensional_index_and_the_error_is_a_jitgrad_error_and_an_index_error():
    f = jitgrad.jit(lambda x, i: x[i])
    for k in GOOD:
        assert f(X, np.int64(k)) == X[k]
    for _ in range(3):
        with pytest.raises(IndexingError) as err:
            f(X, np.int64(N))
        assert isinstance(err.value, IndexError) and isinstance(err.value, JitgradError)


def test_second_axis_and_two_index_arrays_name_the_axis():
    x = np.arange(12.0).reshape(3, 4)
    f = jitgrad.jit(lambda x, i, j: x[i, j])
    np.testing.assert_array_equal(f(x, np.array([2, -3]), np.array([3, -4])), x[[2, -3], [3, -4]])
    with pytest.raises(IndexingError, match="index 4 is out of bounds for axis 1 with size 4"):
        f(x, np.array([0, 1]), np.array([4, 0]))
    with pytest.raises(IndexingError, match="index 3 is out of bounds for axis 0 with size 3"):
        f(x, np.array([3, 1]), np.array([0, 0]))
    for g in (jitgrad.jit(lambda x, j: x[:, j]), jitgrad.jit(lambda x, j: x[None, ..., j])):
        with pytest.raises(IndexError, match="index -5 is out of bounds for axis 1 with size 4"):
            x[None, ..., np.array([-5])]
        with pytest.raises(IndexingError, match="index -5 is out of bounds for axis 1 with size 4"):
            g(x, np.array([-5]))


def test_an_empty_axis_raises_for_any_index_as_numpy():
    f = jitgrad.jit(lambda x, i: x[i])
    with pytest.raises(IndexError):
        np.zeros((0,))[np.array([0])]
    with pytest.raises(IndexingError, match="index is out of bounds for axis 0 with size 0") as err:
        f(np.zeros((0,)), np.array([0]))
    assert "test_index_bounds.py" in str(err.value)
    assert f(np.zeros((0,)), np.zeros(0, np.int64)).shape == (0,)
    g = jitgrad.jit(lambda x, i, j: x[i, j])           # an empty broadcast checks nothing, as NumPy
    x, i, j = np.zeros((3, 4)), np.array([9]), np.zeros(0, np.int64)
    assert g(x, i, j).shape == x[i, j].shape == (0,)
    assert g(np.zeros((0, 4)), np.zeros(0, np.int64), np.array([7])).shape == (0,)


def test_explicit_take_modes_keep_their_semantics():
    i = np.array(BAD[:2] + GOOD)
    clip = jitgrad.jit(lambda x, i: np.take(x, i, mode="clip"))
    wrap = jitgrad.jit(lambda x, i: np.take(x, i, mode="wrap"))
    for _ in range(3):
        np.testing.assert_array_equal(clip(X, i), np.take(X, i, mode="clip"))
        np.testing.assert_array_equal(wrap(X, i), np.take(X, i, mode="wrap"))


def test_clamp_setting_clamps_without_a_check_and_is_part_of_the_cache_key():
    f = jitgrad.jit(lambda x, i: x[i])
    i = np.array([N, -N - 1, 2])
    with pytest.raises(IndexingError):
        f(X, i)
    saved = config.index_bounds
    config.index_bounds = "clamp"
    try:
        for _ in range(3):
            np.testing.assert_array_equal(f(X, i), X[[N - 1, 0, 2]])
        assert "index_check" not in f.lower(X, i).as_text("traced")
    finally:
        config.index_bounds = saved
    with pytest.raises(IndexingError):
        f(X, i)
    with pytest.raises(ValueError, match="index_bounds"):
        config.index_bounds = "wrap"


def test_gradients_raise_for_bad_indices_and_match_numpy_for_good_ones():
    def loss(x, i):
        return np.sum(x[i] * np.arange(1.0, 4.0))
    g = jitgrad.grad(loss)
    i = np.array([1, -1, 1])
    want = np.zeros(N)
    np.add.at(want, i, np.arange(1.0, 4.0))
    for _ in range(3):
        np.testing.assert_array_equal(g(X, i), want)
        with pytest.raises(IndexingError, match="index 7 is out of bounds"):
            g(X, np.array([1, 7, 0]))
    _, pullback = jitgrad.vjp(lambda x: x[np.array([0, 2])], X)
    np.testing.assert_array_equal(pullback(np.ones(2))[0], [1.0, 0.0, 1.0, 0.0, 0.0])


def test_vmap_checks_every_slice():
    f = jitgrad.jit(jitgrad.vmap(lambda x, i: x[i], in_axes=(None, 0)))
    np.testing.assert_array_equal(f(X, np.array([1, -5, 4])), X[[1, -5, 4]])
    with pytest.raises(IndexingError, match="index 5 is out of bounds"):
        f(X, np.array([1, 5, 4]))


def test_indices_inside_a_loop_body_are_checked():
    def f(x, i):
        return jitgrad.fori_loop(0, i.shape[0], lambda k, acc: acc + x[i[k]], 0.0)
    g = jitgrad.jit(f)
    assert g(X, np.array([0, 4, -1])) == X[0] + X[4] + X[-1]
    with pytest.raises(IndexingError, match="index 6 is out of bounds"):
        g(X, np.array([0, 6, 1]))


def test_an_indexing_whose_result_is_unused_still_raises():
    """NumPy evaluates `x[i]` even when nothing reads it; dead-code elimination drops the
    gather but keeps the check (index_check has an effect: the error)."""
    def f(x, i):
        unused = x[i]           # noqa: F841
        return x * 2.0
    g = jitgrad.jit(f)
    np.testing.assert_array_equal(g(X, 4), X * 2.0)
    with pytest.raises(IndexingError, match="index 9 is out of bounds"):
        g(X, 9)
    with pytest.raises(IndexingError, match="index 9 is out of bounds"):
        jitgrad.grad(lambda x, i: np.sum(f(x, i)))(X, 9)
    assert [op.name for op in g.lower(X, 4).function.walk()].count("gather") == 0


def test_threads_see_only_their_own_errors():
    """Two threads call one function at once, one with bad indices, one with good ones, on
    both call paths: only the bad calls raise, and the good ones return NumPy's values."""
    f = jitgrad.jit(lambda x, i: np.sum(np.sin(x[i])))
    x = np.linspace(0.0, 1.0, 4096)
    good, bad = np.arange(4096)[::-1].copy(), np.arange(4096)
    bad[2000] = 4096
    want = np.sum(np.sin(x[good]))
    results = {"good": [], "bad": []}

    def run(name, i):
        for _ in range(200):
            try:
                results[name].append(f(x, i))
            except IndexingError as err:
                results[name].append(err)

    threads = [threading.Thread(target=run, args=("good", good)), threading.Thread(target=run, args=("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(not isinstance(r, Exception) and r == want for r in results["good"])
    assert len(results["bad"]) == 200 and all(isinstance(r, IndexingError) for r in results["bad"])


def test_the_reference_interpreter_raises_as_the_compiled_code():
    np.testing.assert_array_equal(index_check_p.impl(np.array([-1, 4, -5]), size=5, axis=0), [4, 4, 0])
    with pytest.raises(IndexingError, match="index 5 is out of bounds for axis 2 with size 5"):
        index_check_p.impl(np.array([0, 5]), size=5, axis=2)


def test_the_cuda_emulator_keeps_clamping():
    f = jitgrad.jit(lambda x, i: x[i], device="cuda-emulator")
    np.testing.assert_array_equal(f(X, np.array([N, -N - 1, 2])), X[[N - 1, 0, 2]])


def test_an_aot_artifact_returns_its_index_error(tmp_path):
    from jitgrad import aot
    f = jitgrad.jit(_getitem)
    aot.export(f, X, np.array([0, 1]), path=str(tmp_path / "idx"), name="idx")
    artifact = aot.load(str(tmp_path / "idx"))
    np.testing.assert_array_equal(artifact(X, np.array([-N, N - 1])), _getitem(X, np.array([-N, N - 1])))
    with pytest.raises(aot.ArtifactIndexError):
        artifact(X, np.array([0, N]))
    with pytest.raises(IndexError):
        artifact(X, np.array([-N - 1, 0]))
    np.testing.assert_array_equal(artifact(X, np.array([2, 3])), _getitem(X, np.array([2, 3])))


def test_choose_raises_for_entries_outside_the_choices_and_keeps_its_modes():
    """np.choose's mode='raise' rejects any entry outside [0, k), negative ones included
    (NumPy: ValueError); clip and wrap keep NumPy's meaning."""
    a, b = np.arange(4.0), -np.arange(4.0)
    choose = jitgrad.jit(lambda i, a, b: np.choose(i, [a, b]))
    for _ in range(3):                                    # the native call path too
        np.testing.assert_array_equal(choose(np.array([0, 1, 1, 0]), a, b), np.choose([0, 1, 1, 0], [a, b]))
        for bad in ([0, 2, 1, 0], [0, -1, 1, 0]):
            with pytest.raises(IndexingError, match="out of bounds"):
                choose(np.array(bad), a, b)
    for mode in ("clip", "wrap"):
        i = np.array([0, 5, -3, 1])
        got = jitgrad.jit(lambda i, a, b: np.choose(i, [a, b], mode=mode))(i, a, b)
        np.testing.assert_array_equal(got, np.choose(i, [a, b], mode=mode))
