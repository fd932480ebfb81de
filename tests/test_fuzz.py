"""The differential fuzzer (tests/fuzz.py) on a fixed budget, and tests of the fuzzer.

CI runs the hand-written cases (the silent wrong answers the fuzzer exists to catch) and
a fixed stream of random programs (deterministic seeds); longer runs are
`python -m tests.fuzz --minutes N`. A failure listed in `fuzz.KNOWN_FAILURES` (with its
reason) is reported, not failed; anything else fails with the program's reproducer.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import jitgrad
from jitgrad.ir import DType
from jitgrad.passes import memory
from jitgrad.tracing import numpy_api as api

import fuzz

RANDOM_SEED = 20261201
RANDOM_PROGRAMS = 60           # about 30 s on one idle core
CHUNK = 10


@pytest.fixture(autouse=True)
def no_disk_cache():
    with fuzz.fuzz_settings():
        yield


def _assert_clean(outcome: fuzz.Outcome) -> None:
    unknown, known = [], []
    for f in outcome.failures:
        f = fuzz.classify(f)
        (known if f.known is not None else unknown).append(f)
    for f in known:
        warnings.warn(f"known fuzz failure {f.known.name!r}: {f.detail}", stacklevel=2)
    assert not unknown, "\n\n".join(f.report() for f in unknown)


@pytest.mark.parametrize("program", fuzz.fixed_cases(), ids=lambda p: p.label)
def test_fixed_case(program):
    _assert_clean(fuzz.check_program(program, np.random.default_rng(0)))


@pytest.mark.parametrize("case", fuzz.SPECIAL_CASES, ids=lambda c: c.label)
def test_special_case(case):
    _assert_clean(fuzz.check_special(case))


@pytest.mark.parametrize("start", range(0, RANDOM_PROGRAMS, CHUNK))
def test_random_programs(start):
    for index in range(start, start + CHUNK):
        outcome = fuzz.run_program(RANDOM_SEED, index)
        assert outcome.comparisons > 0 or outcome.raised_as_expected or outcome.failures
        _assert_clean(outcome)


# --------------------------------------------------------------------------- the fuzzer's own tests

def _direct_reads_only(kernel, sched):
    """The planner's rule before it considered reads through views: candidates are the
    operands the last member reads directly, whatever else reads them."""
    result = kernel.ops[-1].results[0]
    return [root for root, (value, direct) in memory._member_reads(result, sched)
            if direct and value.type.shape == result.type.shape]


def test_fuzzer_catches_in_place_writes_over_a_viewed_operand(monkeypatch):
    monkeypatch.setattr(memory, "_in_place_candidates", _direct_reads_only)
    cases = {p.label: p for p in fuzz.fixed_cases()}
    for label in ("m + m.T", "e / e[:, :1]"):
        outcome = fuzz.check_program(cases[label], np.random.default_rng(0))
        kinds = {f.kind for f in outcome.failures}
        assert "value" in kinds, f"{label}: the fuzzer missed the in-place bug"


def test_random_stream_finds_the_aliasing_bug(monkeypatch):
    """Random programs (not only the hand-written ones) reach the bug within a short run."""
    monkeypatch.setattr(memory, "_in_place_candidates", _direct_reads_only)
    found = 0
    for index in range(150):
        outcome = fuzz.run_program(1, index)
        found += any(f.kind == "value" and "jit output" in f.detail for f in outcome.failures)
        if found:
            break
    assert found, "150 random programs never combined a value with a view of itself in one kernel"


def test_shrinking_keeps_the_failure_and_drops_the_rest(monkeypatch):
    monkeypatch.setattr(memory, "_in_place_candidates", _direct_reads_only)
    a = np.arange(9.0).reshape(3, 3)
    program = fuzz._case("padded", [
        ("sin", (0,)), ("mul", (0, fuzz.Literal("2"))), ("cos", (1,)),
        ("exp", (2,)), ("add", (3, 3), {}, (None, "{}.T")),
    ], [a], outputs=[4, 5])
    (failure,) = [f for f in fuzz.check_program(program, np.random.default_rng(0)).failures if f.kind == "value"][:1]
    small = fuzz.shrink(failure)
    assert small.kind == "value"
    assert len(small.program.stmts) <= 2, small.program.source()
    assert "v2.T" in small.program.source() or ".T" in small.program.source()


def test_exact_programs_are_compared_bit_for_bit():
    x = np.linspace(-1.0, 1.0, 7)
    program = fuzz._case("exact", [("mul", (0, 0)), ("add", (1, fuzz.Literal("0.5")))], [x])
    ref = fuzz.numpy_reference(program, np.random.default_rng(0))
    assert ref.exact and ref.tolerance == [None]
    fuzz.compare(ref.outputs[0].copy(), ref, 0, "same")
    off_by_one_ulp = ref.outputs[0].copy()
    off_by_one_ulp[3] = np.nextafter(off_by_one_ulp[3], np.inf)
    with pytest.raises(fuzz.Mismatch, match="value"):
        fuzz.compare(off_by_one_ulp, ref, 0, "one ulp")
    with pytest.raises(fuzz.Mismatch, match="dtype"):
        fuzz.compare(ref.outputs[0].astype(np.float32), ref, 0, "f32")


def test_inexact_tolerance_follows_the_ulp_table_and_catches_cancellation():
    x = np.array([1e-15, 0.5, 3.0])
    program = fuzz._case("sinh", [("sinh", (0,))], [x])
    ref = fuzz.numpy_reference(program, np.random.default_rng(0))
    (tol,) = ref.tolerance
    ulps = tol / np.spacing(np.abs(ref.outputs[0]))
    bound = fuzz.ulp_bound("sinh", np.dtype(np.float64))
    assert np.all(ulps >= 1) and np.all(ulps <= 4 * bound + 4), ulps
    composed = 0.5 * (np.exp(x) - np.exp(-x))             # relative error 5e-2 at 1e-15
    with pytest.raises(fuzz.Mismatch, match="value"):
        fuzz.compare(composed, ref, 0, "sinh from exp")


def test_sum_tolerance_is_relative_to_the_sum_of_magnitudes():
    x = np.full(10 ** 6, np.float32(0.1))
    program = fuzz._case("f32 sum", [("sum", (0,), {"axis": None, "kd": False})], [x])
    ref = fuzz.numpy_reference(program, np.random.default_rng(0))
    assert ref.tolerance[0] < 1e-3 * float(ref.outputs[0])     # far below a naive sum's 6e-4 error
    with pytest.raises(fuzz.Mismatch):
        fuzz.compare(np.float32(100060.0), ref, 0, "naive sum")


def test_the_generator_follows_jitgrads_tables(monkeypatch):
    assert set(fuzz.supported_dtypes()) == {np.dtype(d.numpy) for d in DType}
    exp = fuzz.OPS_BY_NAME["exp"]
    assert exp.supported()
    monkeypatch.delitem(api.UFUNCS, np.exp)
    assert not exp.supported()


def test_an_unlisted_error_is_a_failure_and_a_listed_one_is_not():
    x = np.array([1, 2, 3])
    power = fuzz._case("int ** int array", [("np.power", (0, 0))], [x])
    outcome = fuzz.check_program(power, np.random.default_rng(0))
    assert not outcome.failures or all(f.kind != "refused" for f in outcome.failures)


def test_known_failures_carry_reasons():
    for known in fuzz.KNOWN_FAILURES:
        assert known.name and len(known.reason) > 20


def test_command_line_summary(capsys):
    assert fuzz.main(["--programs", "3", "--seed", "5", "--no-fixed", "--in-process"]) in (0, 1)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("fuzz: 3 programs") and "comparisons" in line and "failures" in line


def test_a_crashing_program_is_reported_and_the_run_goes_on(capsys):
    status = fuzz.main(["--programs", "3", "--seed", "5", "--no-fixed", "--abort-at", "1"])
    out = capsys.readouterr().out
    assert status == 1
    assert "[crash] seed 5 program 1" in out and "def program(" in out
    assert out.strip().splitlines()[-1].startswith("fuzz: 3 programs")


def test_gradient_checks_catch_a_wrong_derivative():
    @jitgrad.custom_jvp
    def wrong_sin(x):
        return np.sin(x)
    wrong_sin.defjvp(lambda p, t: (wrong_sin(*p), t[0] * 1.5 * np.cos(p[0])))   # 1.5 x the derivative
    x = np.array([0.3, -0.7, 1.1])
    program = fuzz._case("sin", [("sin", (0,))], [x])
    rng = np.random.default_rng(0)
    ref = fuzz.numpy_reference(program, rng)
    fuzz.check_gradients(program, lambda v: (np.sin(v),), ref, rng, fuzz.Outcome())     # the right rule passes
    with pytest.raises(fuzz.Mismatch, match="jvp"):
        fuzz.check_gradients(program, lambda v: (wrong_sin(v),), ref, rng, fuzz.Outcome())


def test_ill_conditioned_eigenvalues_are_not_a_reference():
    """A Jordan-like block (condition numbers in the thousands) is masked with its sorted
    neighbours; a symmetric matrix (condition number 1) is compared in full."""
    jordan = np.diag([1.0, 1.0 + 1e-6, 5.0]) + np.diag([1.0, 0.0], 1)
    mask = fuzz._ill_conditioned_eigenvalues(jordan, np.zeros(3))
    assert mask.tolist() == [True, True, True]
    spd = np.array([[2.0, 0.5, 0.0], [0.5, 3.0, 0.1], [0.0, 0.1, 7.0]])
    assert not fuzz._ill_conditioned_eigenvalues(spd, np.zeros(3)).any()
    separated = np.diag([1.0, 1.0 + 1e-6, 50.0, 60.0]) + np.diag([1.0, 0.0, 0.0], 1)
    assert fuzz._ill_conditioned_eigenvalues(separated, np.zeros(4)).tolist() == [True, True, True, False]


def test_repeated_calls_compare_bits_except_a_nans_sign():
    nan = np.float64(np.nan)
    assert fuzz._bitwise_equal(np.array([1.0, nan]), np.array([1.0, -nan]))
    assert fuzz._bitwise_equal(np.array([1 + 1j * nan], np.complex64), np.array([1 - 1j * nan], np.complex64))
    assert not fuzz._bitwise_equal(np.array([0.0, nan]), np.array([-0.0, nan]))
    assert not fuzz._bitwise_equal(np.array([1.0]), np.array([np.nextafter(1.0, 2.0)]))
    assert not fuzz._bitwise_equal(np.array([1.0, nan]), np.array([1.0, 2.0]))
    assert not fuzz._bitwise_equal(np.array([1, 2]), np.array([1, 3]))
    assert not fuzz._bitwise_equal(np.array([1.0], np.float32), np.array([1.0]))


def test_a_remainder_whose_operand_moves_by_a_good_part_of_the_divisor_is_undetermined():
    """remainder(a, b) repeats with the period |b| in a: where a's spread reaches |b| / 16,
    the element is not a reference (a move of twelve periods looks like no move at all)."""
    a = np.array([1000.0, 1000.0, 1000.0])
    b = np.array([1.349, 100.0, 0.0])
    program = fuzz._case("remainder", [("remainder", (0, 1))], [a, b])
    values = fuzz._evaluate(program, None)
    spreads = [np.full(3, 1.0), np.zeros(3), np.zeros(3)]
    mask = fuzz._periodic_masks(program, values, spreads)[2]
    assert mask.tolist() == [True, False, True]
    assert 2 not in fuzz._periodic_masks(program, values, [np.zeros(3)] * 3)
    # a divisor's move counts |a / b| times: 1e-3 of 1.349 is 0.74 in a
    mask = fuzz._periodic_masks(program, values, [np.zeros(3), np.full(3, 1e-3), np.zeros(3)])[2]
    assert mask.tolist() == [True, False, True]


def test_operands_on_which_scipy_would_not_finish_are_not_proposed():
    hangs = fuzz._far_negative_non_integers
    assert hangs([np.array([1.0, -59861137953.04893])])
    assert not hangs([np.array([1.0, -1660.7, -5e10, -np.inf, np.nan])])       # integers are poles: fast
    assert not hangs([np.array([-10 ** 9], np.int64)])
    assert next(op for op in fuzz.OPS if op.name == "sc.polygamma").may_hang is hangs


def test_perturbed_runs_keep_the_dtype_and_separate_every_pair_of_a_transposed_difference():
    """`sin(x) - sin(x).T` on float32: each perturbed sin stays float32 (a float64 move
    made the later statements exact), and every off-diagonal element of the difference gets
    the spread of both sines' bounds, not the cancelled one of moves alike (seed 1612 #31:
    a million elements, 20 compared without their bound)."""
    x = np.random.default_rng(3).uniform(-3, 3, (300, 300)).astype(np.float32)
    program = fuzz._case("sin - sin.T", [("sin", (0,)), ("sub", (1, 1), {}, (None, "{}.T"))], [x])
    values = fuzz._evaluate(program, None)
    for move in fuzz._moves(program, values, len(fuzz.MOVES)):
        noisy = fuzz._evaluate(program, (np.random.default_rng(0), {}, move), exact=values)
        assert [np.asarray(v).dtype for v in noisy] == [np.float32] * 3, move
    ref = fuzz.numpy_reference(program, np.random.default_rng(1))
    off_diagonal = ~np.eye(300, dtype=bool)
    floor = 2 * fuzz.ulp(np.abs(ref.outputs[0]).astype(np.float64), np.dtype(np.float32))
    assert np.all(ref.tolerance[0][off_diagonal] > floor[off_diagonal])


def test_eigenvectors_of_a_matrix_numpy_cannot_decompose_are_undetermined():
    """A float16 product overflowed to inf inside the eigh row's matrix: eigvalsh raises
    LinAlgError, and every vector is then undetermined instead of the reference crashing
    (seed 20261214 #2803)."""
    matrix = np.array([[np.inf, 1.0], [1.0, 2.0]])
    mask = fuzz._clustered_eigenvectors(matrix, np.zeros((2, 2)))
    assert mask.shape == (2, 2) and mask.all()
