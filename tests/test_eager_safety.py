"""The eager layers never give a silently wrong derivative.

1. A GradientTape replays from the arrays it recorded; one modified in place between
   the forward pass and `gradient` raises MutationError naming the array, the operation
   that read it and the user's line (small arrays are remembered by a copy; large ones
   are held read-only until the next `gradient`).
2. Conversions that leave the differentiated world (np.asarray and libraries calling it,
   float, math.*, item, tolist, assignment into a NumPy array) raise CutDerivativeError
   while a derivative is carried — tracked tensors of a recording tape, dual tensors —
   and work when nothing is recorded; `.numpy()` and `.value` read the value on purpose.
"""
from __future__ import annotations

import gc
import inspect
import math

import numpy as np
import pytest

import jitgrad
from jitgrad.errors import CutDerivativeError, JitgradError, MutationError
from jitgrad.eager.dual import DualTensor
from jitgrad.eager.guards import COPY_LIMIT
from jitgrad.eager.tape import GradientTape, TrackedTensor
from jitgrad.optimizers import SGD

HERE = "test_eager_safety.py"
LARGE = COPY_LIMIT // 8 + 100          # float64 elements: above the copy limit, so held read-only


# --------------------------------------------------------------------------- mutation: small arrays (copies)

def test_a_watched_buffer_modified_before_gradient_raises_naming_it():
    buf = np.array([1.0, 2.0, 3.0])
    tape = GradientTape()
    x = tape.watch(buf)
    y = np.sum(x ** 2)
    buf[:] = 0.0                                     # the next batch written into the same buffer
    with pytest.raises(MutationError) as info:
        tape.gradient(y, x)
    message = str(info.value)
    assert "tape.watch" in message and "shape (3,)" in message and "modified in place" in message
    assert message.count(HERE) == 2                  # where it was recorded, and the gradient call
    assert isinstance(info.value, JitgradError)


def test_a_variable_copies_so_its_source_buffer_may_be_reused():
    buf = np.array([1.0, 2.0, 3.0])
    tape = GradientTape()
    x = tape.variable(buf)
    y = np.sum(x ** 2)
    buf[:] = 0.0                                     # the tape holds its own copy
    np.testing.assert_array_equal(tape.gradient(y, x), [2.0, 4.0, 6.0])


def test_a_variable_modified_through_its_value_raises():
    tape = GradientTape()
    x = tape.variable(np.array([1.0, 2.0]))
    y = np.sum(np.sin(x))
    x.value[0] = 5.0
    with pytest.raises(MutationError, match="tape.variable"):
        tape.gradient(y, x)


def test_a_recorded_constant_modified_in_place_raises_naming_the_operation_and_line():
    c = np.array([3.0, 4.0])
    tape = GradientTape()
    x = tape.watch(np.array([1.0, 2.0]))
    y = np.sum(x * c); recorded_at = inspect.currentframe().f_lineno
    c[:] = 5.0
    with pytest.raises(MutationError, match=rf"argument 1 of operator\.mul .*shape \(2,\)\) recorded at "
                                            rf"\S*{HERE}:{recorded_at}"):
        tape.gradient(y, x)
    tape = GradientTape()
    x = tape.watch(np.array([1.0, 2.0]))
    z = np.sum(np.sin(np.multiply(c, x))); sin_at = inspect.currentframe().f_lineno
    c[:] = 6.0
    with pytest.raises(MutationError, match=rf"argument 0 of numpy\.multiply .* recorded at \S*{HERE}:{sin_at}"):
        tape.gradient(z, x)


def test_an_array_passed_by_keyword_is_guarded_too():
    lo = np.array([0.0, 0.0, 0.0])
    tape = GradientTape()
    x = tape.watch(np.array([-1.0, 0.5, 2.0]))
    y = np.sum(np.clip(x, a_min=lo, a_max=1.5))
    lo[:] = -5.0
    with pytest.raises(MutationError, match="argument a_min of numpy.clip"):
        tape.gradient(y, x)


def test_a_constant_read_by_two_operations_modified_between_them_raises():
    c = np.ones(3)
    tape = GradientTape()
    x = tape.watch(np.array([1.0, 2.0, 3.0]))
    y = x * c
    c *= 2.0                                         # the two records see different values
    z = np.sum(np.multiply(y, c))
    c /= 2.0                                         # even restored, no replay reproduces both
    with pytest.raises(MutationError, match="before another operation read it"):
        tape.gradient(z, x)


def test_an_optimizer_step_on_a_persistent_tape_makes_the_next_gradient_raise():
    tape = GradientTape(persistent=True)
    w = tape.watch(np.array([1.0, 2.0]))
    loss = np.sum(w ** 3)
    g = tape.gradient(loss, w)
    np.testing.assert_array_equal(g.value, [3.0, 12.0])
    SGD(learning_rate=0.1).apply_gradients([(w, g)])     # updates w's array in place
    with pytest.raises(MutationError, match="tape.watch"):
        tape.gradient(loss, w)


def test_integer_masks_and_nan_constants_are_guarded_bit_for_bit():
    tape = GradientTape(persistent=True)
    x = tape.watch(np.array([0.5, -1.0, 2.0]))
    fill = np.array([-0.0, np.nan, np.nan])
    mask = x.value > 0                               # a plain boolean array: a constant of the replay
    y = np.sum(np.where(mask, x, fill) * 1.0)
    np.testing.assert_array_equal(np.isnan(y.value), True)
    tape.gradient(y, x)                              # NaN == NaN bit for bit: no false alarm
    mask[1] = True
    with pytest.raises(MutationError, match="numpy.where"):
        tape.gradient(y, x)


def test_unmodified_arrays_and_released_tapes_leave_the_user_free():
    buf = np.array([1.0, 2.0])
    tape = GradientTape()
    x = tape.watch(buf)
    g = tape.gradient(np.sum(x * x), x)
    np.testing.assert_array_equal(g, [2.0, 4.0])
    buf[:] = 7.0                                     # after a non-persistent gradient: released
    assert buf.flags.writeable


# --------------------------------------------------------------------------- mutation: large arrays (held read-only)

def test_a_large_recorded_array_is_read_only_until_gradient():
    big = np.ones(LARGE)
    tape = GradientTape()
    x = tape.watch(np.linspace(0.0, 1.0, LARGE))
    y = np.sum(x * big)
    with pytest.raises(ValueError, match="read-only"):
        big[0] = 2.0
    np.testing.assert_array_equal(tape.gradient(y, x), np.ones(LARGE))
    assert big.flags.writeable
    big[0] = 2.0


def test_a_failed_gradient_keeps_the_guards(monkeypatch):
    big = np.ones(LARGE)
    tape = GradientTape()
    x = tape.watch(np.ones(LARGE))
    y = np.sum(x * big)
    from jitgrad.eager import tape as tape_module
    real = tape_module._Program.__init__

    def failing(self, *args):
        raise RuntimeError("simulated compile failure")
    monkeypatch.setattr(tape_module._Program, "__init__", failing)
    tape_module.clear_cache()
    with pytest.raises(RuntimeError, match="simulated"):
        tape.gradient(y, x)
    assert not big.flags.writeable                   # still held: the tape may be asked again
    monkeypatch.setattr(tape_module._Program, "__init__", real)
    np.testing.assert_array_equal(tape.gradient(y, x), np.ones(LARGE))
    assert big.flags.writeable


def test_a_persistent_tape_copies_large_arrays_at_gradient_then_detects_changes():
    w = np.full(LARGE, 2.0)
    tape = GradientTape(persistent=True)
    x = tape.watch(w)
    y = np.sum(x ** 2)
    g = tape.gradient(y, x)
    assert w.flags.writeable                         # given back, remembered by a copy
    w -= 0.1 * g.value
    with pytest.raises(MutationError, match="tape.watch"):
        tape.gradient(y, x)


def test_a_large_array_made_writeable_again_by_the_user_raises():
    big = np.ones(LARGE)
    tape = GradientTape()
    x = tape.watch(np.ones(LARGE))
    y = np.sum(x * big)
    big.flags.writeable = True
    with pytest.raises(MutationError, match="made writeable again"):
        tape.gradient(y, x)


def test_a_large_view_is_copied_and_a_write_through_its_base_is_seen():
    base = np.ones(2 * LARGE)
    view = base[:LARGE]
    tape = GradientTape()
    x = tape.watch(np.ones(LARGE))
    y = np.sum(x * view)
    base[:] = 3.0                                    # the view's memory, written through its base
    with pytest.raises(MutationError, match="argument 1 of operator.mul"):
        tape.gradient(y, x)


def test_a_dropped_tape_gives_its_arrays_back():
    big = np.ones(LARGE)
    tape = GradientTape()
    y = np.sum(tape.watch(big) * 2.0)
    assert not big.flags.writeable
    del tape, y
    gc.collect()
    assert big.flags.writeable


def test_two_tapes_recording_one_large_array():
    big = np.ones(LARGE)
    outer, inner = GradientTape(), GradientTape()
    x = outer.watch(np.ones(LARGE))
    u = inner.watch(np.full(LARGE, 2.0))
    y = np.sum(x * big)                              # outer holds big read-only
    z = np.sum(u * big)                              # inner finds it read-only: keeps a copy
    np.testing.assert_array_equal(outer.gradient(y, x), np.ones(LARGE))
    assert big.flags.writeable
    np.testing.assert_array_equal(inner.gradient(z, u), np.ones(LARGE))
    big2 = np.ones(LARGE)
    outer, inner = GradientTape(), GradientTape()
    x, u = outer.watch(np.ones(LARGE)), inner.watch(np.ones(LARGE))
    y, z = np.sum(x * big2), np.sum(u * big2)
    outer.gradient(y, x)
    big2[0] = 5.0                                    # writeable again, but inner recorded it
    with pytest.raises(MutationError):
        inner.gradient(z, u)


# --------------------------------------------------------------------------- conversions that cut derivatives

def third_party_logsumexp(a):
    """What a library such as scipy does with its argument: np.asarray first."""
    a = np.asarray(a)
    return np.log(np.sum(np.exp(a)))


def assign_element(t):
    y = np.zeros(3)
    y[1] = t[0]                  # NumPy calls float(t[0]); it reports a ValueError caused by ours
    return y


def assign_slice(t):
    y = np.zeros(3)
    y[:2] = t[:2]
    return y


CONVERSIONS = {
    "np.asarray": np.asarray,
    "np.array": np.array,
    "float": lambda t: float(t[0]),
    "complex": lambda t: complex(t[0]),
    "math.exp": lambda t: math.exp(t[0]),
    "item": lambda t: t[0].item(),
    "tolist": lambda t: t.tolist(),
    "third-party np.asarray": third_party_logsumexp,
    "assign an element": assign_element,
    "assign a slice": assign_slice,
}
try:
    import scipy.special
    CONVERSIONS["scipy.special.logsumexp"] = lambda t: scipy.special.logsumexp(t)
except ImportError:           # scipy is optional; third_party_logsumexp does what it does
    pass


def _cut_error(excinfo) -> CutDerivativeError | None:
    """The CutDerivativeError raised, or the one a NumPy error was raised from."""
    err = excinfo.value
    while err is not None and not isinstance(err, CutDerivativeError):
        err = err.__cause__
    return err


def _tracked():
    tape = GradientTape(persistent=True)
    return tape, tape.watch(np.array([0.5, 1.5]))


def _dual():
    return DualTensor(np.array([0.5, 1.5]), np.array([1.0, 0.0]))


@pytest.mark.parametrize("name", list(CONVERSIONS))
@pytest.mark.parametrize("kind", ["tracked", "dual"])
def test_conversions_that_drop_a_derivative_raise(kind, name):
    t = _tracked()[1] if kind == "tracked" else _dual()
    with pytest.raises((CutDerivativeError, ValueError)) as info:
        CONVERSIONS[name](t)
    err = _cut_error(info)
    assert err is not None, f"{name} failed without saying why: {info.value!r}"
    message = str(err)
    assert "drop its derivative" in message and type(t).__name__ in message
    assert ".numpy()" in message and HERE in message      # the way out, and the user's line


@pytest.mark.parametrize("name", list(CONVERSIONS))
def test_conversions_work_when_nothing_is_recorded(name):
    tape, x = _tracked()
    expected = CONVERSIONS[name](x.numpy())
    with tape.stop_recording():
        np.testing.assert_array_equal(CONVERSIONS[name](x), expected)
    released = GradientTape()
    y = released.watch(np.array([0.5, 1.5]))
    released.gradient(np.sum(y), y)                         # a non-persistent tape: released
    np.testing.assert_array_equal(CONVERSIONS[name](y), expected)


@pytest.mark.parametrize("kind", ["tracked", "dual"])
def test_in_place_operators_into_a_plain_array_are_refused(kind):
    t = _tracked()[1] if kind == "tracked" else _dual()
    a = np.zeros(2)
    with pytest.raises(jitgrad.UnsupportedOperationError, match="drop its derivative"):
        a += t
    np.testing.assert_array_equal(a, [0.0, 0.0])


@pytest.mark.parametrize("kind", ["tracked", "dual"])
def test_reading_the_value_on_purpose(kind):
    t = _tracked()[1] if kind == "tracked" else _dual()
    copy = t.numpy()
    assert type(copy) is np.ndarray and copy is not t.value and not np.shares_memory(copy, t.value)
    np.testing.assert_array_equal(copy, [0.5, 1.5])
    assert float(t.value[0]) == 0.5 and t.value.item(1) == 1.5
    assert bool(t[0] > 0) and int(t[1]) == 1 and len(t) == 2    # piecewise constant: allowed


def test_stop_gradient_and_stop_recording_are_the_documented_ways_to_a_constant():
    tape = GradientTape()
    x = tape.watch(np.array([1.0, 2.0]))
    detached = jitgrad.stop_gradient(x)
    assert type(detached) is np.ndarray
    with tape.stop_recording():
        scale = float(np.sum(x))
    y = np.sum(x * detached) * scale
    np.testing.assert_array_equal(tape.gradient(y, x), np.array([1.0, 2.0]) * 3.0)


def test_a_compiled_function_on_tracked_tensors_keeps_its_derivative():
    """Handled correctly, not refused: jitgrad's own compiled functions are one
    recorded call, not a conversion."""
    f = jitgrad.jit(lambda v: np.log(np.sum(np.exp(v))))
    tape = GradientTape()
    x = tape.watch(np.array([0.5, 1.5]))
    g = tape.gradient(f(x), x)
    e = np.exp([0.5, 1.5])
    np.testing.assert_allclose(g, e / e.sum(), rtol=1e-12)
    d = f(DualTensor(np.array([0.5, 1.5]), np.array([1.0, 0.0])))
    np.testing.assert_allclose(d.tangent, e[0] / e.sum(), rtol=1e-12)


def test_tracked_tensor_type_is_exported():
    assert jitgrad.TrackedTensor is TrackedTensor and jitgrad.CutDerivativeError is CutDerivativeError
    assert jitgrad.MutationError is MutationError
