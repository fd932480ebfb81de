"""numpy.linalg on complex64/complex128 matrices and eig/eigvals: compiled values against
NumPy (LAPACK's c/z routines called from the generated code; eig bit for bit), gradients
of real losses in JAX's convention (df/dx - i df/dy) and forward-mode derivatives against
central differences along the real and imaginary directions, second order for the
factorizations."""
import numpy as np
import pytest

import jitgrad

COMPLEX = [np.complex64, np.complex128]


def complex_array(rng, shape, dtype=np.complex128):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


def hermitian_positive(rng, shape, dtype=np.complex128):
    a = complex_array(rng, shape, dtype)
    return (a @ np.conj(np.swapaxes(a, -1, -2)) + shape[-1] * np.eye(shape[-1])).astype(dtype)


def well_conditioned(rng, shape, dtype=np.complex128):
    return (complex_array(rng, shape, dtype) + 3 * np.eye(shape[-1])).astype(dtype)


def tolerance(dtype):
    return 2e-5 if np.dtype(dtype) == np.complex64 else 1e-12


FUNCTIONS = {
    "solve": (lambda a, b: np.linalg.solve(a, b), lambda rng, d: (well_conditioned(rng, (2, 4, 4), d),
                                                                  complex_array(rng, (2, 4, 3), d))),
    "solve-vector": (lambda a, b: np.linalg.solve(a, b), lambda rng, d: (well_conditioned(rng, (4, 4), d),
                                                                         complex_array(rng, (4,), d))),
    "inv": (np.linalg.inv, lambda rng, d: (well_conditioned(rng, (3, 4, 4), d),)),
    "det": (np.linalg.det, lambda rng, d: (well_conditioned(rng, (2, 4, 4), d),)),
    "slogdet": (np.linalg.slogdet, lambda rng, d: (well_conditioned(rng, (2, 3, 3), d),)),
    "cholesky": (np.linalg.cholesky, lambda rng, d: (hermitian_positive(rng, (2, 4, 4), d),)),
    "cholesky-upper": (lambda a: np.linalg.cholesky(a, upper=True),
                       lambda rng, d: (hermitian_positive(rng, (4, 4), d),)),
    "cholesky-solve": (lambda a, b: np.linalg.solve(np.linalg.cholesky(a), b),
                       lambda rng, d: (hermitian_positive(rng, (4, 4), d), complex_array(rng, (4, 2), d))),
    "matrix_power": (lambda a: np.linalg.matrix_power(a, -3), lambda rng, d: (well_conditioned(rng, (3, 3), d),)),
    "multi_dot": (lambda a, b, c: np.linalg.multi_dot([a, b, c]),
                  lambda rng, d: (complex_array(rng, (3, 5), d), complex_array(rng, (5, 2), d),
                                  complex_array(rng, (2, 4), d))),
    "tensorsolve": (np.linalg.tensorsolve, lambda rng, d: (well_conditioned(rng, (6, 6), d).reshape(2, 3, 6),
                                                           complex_array(rng, (2, 3), d))),
    "tensorinv": (lambda a: np.linalg.tensorinv(a, ind=1), lambda rng, d: (well_conditioned(rng, (6, 6), d)
                                                                           .reshape(6, 2, 3),)),
    "norm": (np.linalg.norm, lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "norm-fro-axis": (lambda a: np.linalg.norm(a, "fro", axis=(0, 2)),
                      lambda rng, d: (complex_array(rng, (3, 2, 4), d),)),
    "norm-1": (lambda a: np.linalg.norm(a, 1), lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "norm-inf": (lambda a: np.linalg.norm(a, np.inf), lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "norm-vector-3": (lambda a: np.linalg.norm(a, 3, axis=0), lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "norm-vector-0": (lambda a: np.linalg.norm(a, 0, axis=-1), lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "vector_norm": (lambda a: np.linalg.vector_norm(a, axis=(0, 1), keepdims=True),
                    lambda rng, d: (complex_array(rng, (3, 4, 2), d),)),
    "matrix_norm": (lambda a: np.linalg.matrix_norm(a, ord=-1), lambda rng, d: (complex_array(rng, (2, 3, 4), d),)),
    "cond-1": (lambda a: np.linalg.cond(a, 1), lambda rng, d: (well_conditioned(rng, (2, 4, 4), d),)),
    "eigvalsh": (np.linalg.eigvalsh, lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "eigvalsh-upper": (lambda a: np.linalg.eigvalsh(a, UPLO="U"), lambda rng, d: (complex_array(rng, (4, 4), d),)),
    # eigenvectors are compared up to a phase each (test_eigh_vectors_match_numpy_up_to_phase);
    # these are functions of the eigenvectors that do not depend on the phases
    "eigh-projector": (lambda a: _projector(np.linalg.eigh(a)), lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "eigh-upper-moduli": (lambda a: _moduli(np.linalg.eigh(a, UPLO="U")),
                          lambda rng, d: (complex_array(rng, (4, 4), d),)),
    "svdvals": (np.linalg.svdvals, lambda rng, d: (complex_array(rng, (2, 5, 3), d),)),
    "svd-values": (lambda a: np.linalg.svd(a, compute_uv=False), lambda rng, d: (complex_array(rng, (3, 4), d),)),
    "svd-reconstruction": (lambda a: _svd_products(np.linalg.svd(a, full_matrices=False)),
                           lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "svd-tall": (lambda a: _svd_products(np.linalg.svd(a, full_matrices=False)),
                 lambda rng, d: (complex_array(rng, (5, 3), d),)),
    "svd-wide": (lambda a: _svd_products(np.linalg.svd(a, full_matrices=False)),
                 lambda rng, d: (complex_array(rng, (3, 5), d),)),
    "pinv": (np.linalg.pinv, lambda rng, d: (complex_array(rng, (2, 5, 3), d),)),
    "lstsq": (lambda a, b: np.linalg.lstsq(a, b)[:3], lambda rng, d: (complex_array(rng, (6, 3), d),
                                                                      complex_array(rng, (6, 2), d))),
    "matrix_rank": (np.linalg.matrix_rank, lambda rng, d: (complex_array(rng, (2, 4, 3), d),)),
    "cond": (np.linalg.cond, lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "norm-2": (lambda a: np.linalg.norm(a, 2), lambda rng, d: (complex_array(rng, (4, 3), d),)),
    "norm-nuc": (lambda a: np.linalg.norm(a, "nuc"), lambda rng, d: (complex_array(rng, (4, 3), d),)),
    "qr": (lambda a: tuple(np.linalg.qr(a)), lambda rng, d: (complex_array(rng, (2, 5, 3), d),)),
    "qr-square": (lambda a: tuple(np.linalg.qr(a)), lambda rng, d: (complex_array(rng, (4, 4), d),)),
    "qr-complete": (lambda a: tuple(np.linalg.qr(a, mode="complete")), lambda rng, d: (complex_array(rng, (5, 3), d),)),
    "qr-wide-r": (lambda a: np.linalg.qr(a, mode="r"), lambda rng, d: (complex_array(rng, (3, 5), d),)),
    "eigvals": (np.linalg.eigvals, lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "eig": (lambda a: tuple(np.linalg.eig(a)), lambda rng, d: (complex_array(rng, (2, 4, 4), d),)),
    "eig-moduli": (lambda a: _moduli(np.linalg.eig(a)), lambda rng, d: (complex_array(rng, (4, 4), d),)),
    "cross": (np.linalg.cross, lambda rng, d: (complex_array(rng, (2, 3), d), complex_array(rng, (2, 3), d))),
    "np.cross-axis": (lambda a, b: np.cross(a, b, axisa=0, axisb=-1), lambda rng, d: (complex_array(rng, (3, 2), d),
                                                                                   complex_array(rng, (2, 3), d))),
}


def _svd_products(svd):
    """U diag(s) V^H and the projectors U U^H, V V^H weighted by s: free of the phases of
    the singular vector pairs."""
    u, s, vt = svd
    v = np.conj(np.swapaxes(vt, -1, -2))
    return ((u * s[..., None, :]) @ vt, (u * s[..., None, :]) @ np.conj(np.swapaxes(u, -1, -2)),
            (v * s[..., None, :]) @ vt)


def _projector(eigh):
    """V diag(w) V^H with one more weight per eigenvalue: phase-free."""
    w, v = eigh
    return (v * np.arange(1.0, 1.0 + w.shape[-1])) @ np.conj(np.swapaxes(v, -1, -2)) + w[..., None]


def _moduli(eigh):
    w, v = eigh
    return np.abs(v) ** 2 + w


def _leaves(x):
    return list(x) if isinstance(x, tuple) else [x]


@pytest.mark.parametrize("dtype", COMPLEX, ids=["c64", "c128"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_compiled_values_match_numpy(name, dtype):
    f, make = FUNCTIONS[name]
    args = make(np.random.default_rng(len(name)), dtype)
    got, expected = _leaves(jitgrad.jit(f)(*args)), _leaves(f(*args))
    for g, e in zip(got, expected, strict=True):
        g = np.asarray(g)
        assert g.dtype == e.dtype and g.shape == e.shape, (g.dtype, e.dtype, g.shape, e.shape)
        scale = max(1.0, float(np.max(np.abs(e))))
        np.testing.assert_allclose(g, e, rtol=0, atol=tolerance(dtype) * scale * 10)


@pytest.mark.parametrize("dtype", COMPLEX, ids=["c64", "c128"])
@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh_vectors_match_numpy_up_to_phase(uplo, dtype):
    """heevd's eigenvalues as NumPy's; each eigenvector is NumPy's times a unit factor
    (complex eigenvectors have no canonical phase; in complex64 LAPACK's phases differ
    from NumPy's call by a sign now and then)."""
    a = complex_array(np.random.default_rng(4), (2, 5, 5), dtype)
    w, v = jitgrad.jit(lambda x: np.linalg.eigh(x, UPLO=uplo))(a)
    expected_w, expected_v = np.linalg.eigh(a, UPLO=uplo)
    assert w.dtype == expected_w.dtype and v.dtype == expected_v.dtype
    np.testing.assert_allclose(w, expected_w, atol=tolerance(dtype) * 100)
    phases = np.einsum("bij,bij->bj", np.conj(expected_v), v)
    np.testing.assert_allclose(np.abs(phases), 1, atol=tolerance(dtype) * 100)
    np.testing.assert_allclose(v, expected_v * phases[:, None, :], atol=tolerance(dtype) * 100)
    if dtype == np.complex128:
        np.testing.assert_array_equal(v, expected_v)


@pytest.mark.parametrize("dtype", COMPLEX, ids=["c64", "c128"])
@pytest.mark.parametrize("shape, full", [((4, 4), True), ((2, 5, 3), True), ((3, 5), False)])
def test_svd_factors_match_numpy_up_to_phase(shape, full, dtype):
    """gesdd's singular values as NumPy's; each pair of singular vectors is NumPy's times
    one unit factor (u_i c, v_i c)."""
    a = complex_array(np.random.default_rng(9), shape, dtype)
    u, s, vt = jitgrad.jit(lambda x: np.linalg.svd(x, full_matrices=full))(a)
    expected_u, expected_s, expected_vt = np.linalg.svd(a, full_matrices=full)
    assert (u.dtype, s.dtype, vt.dtype) == (expected_u.dtype, expected_s.dtype, expected_vt.dtype)
    atol = tolerance(dtype) * 100
    np.testing.assert_allclose(s, expected_s, atol=atol)
    k = s.shape[-1]
    phases = np.einsum("...ij,...ij->...j", np.conj(expected_u[..., :k]), u[..., :k])
    np.testing.assert_allclose(np.abs(phases), 1, atol=atol)
    np.testing.assert_allclose(u[..., :k], expected_u[..., :k] * phases[..., None, :], atol=atol)
    np.testing.assert_allclose(vt[..., :k, :], expected_vt[..., :k, :] * np.conj(phases)[..., :, None], atol=atol)


def real_loss(f, weights):
    """Re sum(w * f(...)) over every output: a real function that reads each output's real
    and imaginary parts."""
    def loss(*args):
        return sum(np.real(np.sum(w * out)) for w, out in zip(weights, _leaves(f(*args)), strict=True))
    return loss


def central_gradient(loss, args, position, h=1e-6):
    """d loss/dx - i d loss/dy for each element of args[position] (JAX's convention)."""
    z = args[position]
    grad = np.zeros_like(z)

    def at(shift):
        return loss(*[z + shift if k == position else a for k, a in enumerate(args)])
    for k in range(z.size):
        e = np.zeros_like(z)
        e.flat[k] = h
        dx = (at(e) - at(-e)) / (2 * h)
        dy = (at(1j * e) - at(-1j * e)) / (2 * h)
        grad.flat[k] = dx - 1j * dy
    return grad


DIFFERENTIABLE = ["solve", "solve-vector", "inv", "det", "slogdet", "cholesky", "cholesky-upper", "cholesky-solve",
                  "matrix_power", "multi_dot", "tensorsolve", "tensorinv", "norm", "norm-fro-axis", "norm-1",
                  "norm-vector-3", "vector_norm", "cond-1", "eigvalsh", "eigvalsh-upper", "eigh-projector",
                  "eigh-upper-moduli", "svdvals", "svd-values", "svd-reconstruction", "svd-tall", "svd-wide",
                  "pinv", "lstsq", "cond", "norm-2", "norm-nuc", "qr", "qr-square", "eigvals", "eig-moduli", "cross",
                  "np.cross-axis"]


def _setup(name, rng_seed=3):
    f, make = FUNCTIONS[name]
    rng = np.random.default_rng(rng_seed)
    args = make(rng, np.complex128)
    outs = _leaves(f(*args))
    weights = [complex_array(rng, np.shape(o)) if np.iscomplexobj(o) else rng.standard_normal(np.shape(o))
               for o in outs]
    return f, args, real_loss(f, weights)


@pytest.mark.parametrize("name", DIFFERENTIABLE)
def test_gradients_match_central_differences(name):
    """Reverse mode (jitgrad.grad) and forward mode (jitgrad.jvp along a random complex
    direction) of a real loss, for every complex argument."""
    f, args, loss = _setup(name)
    positions = tuple(range(len(args)))
    grads = jitgrad.grad(loss, argnums=positions)(*args)
    rng = np.random.default_rng(11)
    tangents = tuple(complex_array(rng, a.shape) for a in args)
    _, forward = jitgrad.jvp(loss, args, tangents)
    expected_forward = 0.0
    for k in positions:
        expected = central_gradient(loss, args, k)
        np.testing.assert_allclose(grads[k], expected, rtol=1e-6, atol=1e-7)
        expected_forward += np.sum(np.real(expected) * np.real(tangents[k]) - np.imag(expected) * np.imag(tangents[k]))
    np.testing.assert_allclose(forward, expected_forward, rtol=1e-6, atol=1e-7)


SECOND_ORDER = {
    "solve": (lambda a, b: np.linalg.solve(a, b), lambda rng: (well_conditioned(rng, (3, 3)),
                                                               complex_array(rng, (3, 1)))),
    "inv": (np.linalg.inv, lambda rng: (well_conditioned(rng, (2, 2)),)),
    "slogdet": (np.linalg.slogdet, lambda rng: (well_conditioned(rng, (3, 3)),)),
    "cholesky": (np.linalg.cholesky, lambda rng: (hermitian_positive(rng, (3, 3)),)),
    "eigh-projector": (lambda a: _projector(np.linalg.eigh(a)), lambda rng: (complex_array(rng, (3, 3)),)),
    "svd": (lambda a: _svd_products(np.linalg.svd(a, full_matrices=False)), lambda rng: (complex_array(rng, (3, 2)),)),
    "pinv": (np.linalg.pinv, lambda rng: (complex_array(rng, (3, 2)),)),
    "qr": (lambda a: tuple(np.linalg.qr(a)), lambda rng: (complex_array(rng, (3, 2)),)),
    "eigvals": (np.linalg.eigvals, lambda rng: (complex_array(rng, (3, 3)),)),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_second_order_matches_central_differences(name):
    """The gradient of a real function of the gradient (reverse over reverse) and of the
    forward-mode derivative (reverse over forward), on small matrices."""
    f, make = SECOND_ORDER[name]
    rng = np.random.default_rng(5)
    args = make(rng)
    weights = [complex_array(rng, np.shape(o)) if np.iscomplexobj(o) else rng.standard_normal(np.shape(o))
               for o in _leaves(f(*args))]
    loss = real_loss(f, weights)
    direction = complex_array(rng, args[0].shape)
    grad = jitgrad.grad(loss)

    def through_grad(*a):
        return np.real(np.sum(grad(*a) * direction))

    def through_jvp(*a):
        return jitgrad.jvp(loss, a, (direction,) + tuple(np.zeros_like(x) for x in a[1:]))[1]
    for second in (through_grad, through_jvp):
        np.testing.assert_allclose(jitgrad.grad(second)(*args), central_gradient(second, args, 0, h=1e-5),
                                   rtol=1e-5, atol=1e-6)


def test_holomorphic_derivatives_of_inv_and_det():
    """inv and det are holomorphic: holomorphic=True gives d det / dA = det A^-T entrywise and
    d inv(A)[0, 1] / dA[k, l] = -inv(A)[0, k] inv(A)[l, 1]."""
    a = well_conditioned(np.random.default_rng(2), (3, 3))
    jac = jitgrad.jacfwd(np.linalg.det, holomorphic=True)(a)
    np.testing.assert_allclose(jac, np.linalg.det(a) * np.linalg.inv(a).T, rtol=1e-11)
    g = jitgrad.grad(lambda x: np.linalg.inv(x)[0, 1], holomorphic=True)(a)
    inverse = np.linalg.inv(a)
    np.testing.assert_allclose(g, -np.outer(inverse[0, :], inverse[:, 1]), rtol=1e-11)    # -inv[0, k] inv[l, 1]


def test_singular_and_not_positive_definite_give_nan_or_numpy_values():
    singular = np.array([[1, 1j], [1, 1j]], np.complex128)
    assert np.all(np.isnan(jitgrad.jit(np.linalg.inv)(singular)))
    sign, logdet = jitgrad.jit(np.linalg.slogdet)(singular)
    assert sign == 0 and logdet == -np.inf
    assert jitgrad.jit(np.linalg.det)(singular) == 0
    assert np.all(np.isnan(jitgrad.jit(np.linalg.cholesky)(-np.eye(2, dtype=np.complex128))))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_eig_is_numpys_bit_for_bit(dtype):
    """geev as NumPy calls it, in double precision for single-precision input as NumPy
    does: the same eigenvalues in the same order, the same eigenvectors (unit norm, largest
    component real; real matrices' conjugate pairs expanded as NumPy does), complex
    results for real input (complex64 for float32)."""
    rng = np.random.default_rng(12)
    a = (complex_array(rng, (3, 5, 5)) if np.dtype(dtype).kind == "c" else rng.standard_normal((3, 5, 5))).astype(dtype)
    w, v = jitgrad.jit(np.linalg.eig)(a)
    expected_w, expected_v = np.linalg.eig(a)
    assert np.iscomplexobj(expected_w), "a random real 5x5 batch has complex eigenvalues"
    assert w.dtype == expected_w.dtype and v.dtype == expected_v.dtype
    np.testing.assert_array_equal(w, expected_w)
    np.testing.assert_array_equal(v, expected_v)
    np.testing.assert_array_equal(jitgrad.jit(np.linalg.eigvals)(a), np.linalg.eigvals(a))


def test_eig_of_a_real_spectrum_is_complex_with_numpys_values():
    """NumPy returns real arrays when every eigenvalue of a real matrix is real; jitgrad's
    are complex (a compiled program's dtype cannot depend on the values), with the same numbers."""
    a = np.array([[2.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 4.0]]) + np.triu(np.ones((3, 3)), 1)
    w, v = jitgrad.jit(np.linalg.eig)(a)
    expected_w, expected_v = np.linalg.eig(a)
    assert w.dtype == np.complex128 and expected_w.dtype == np.float64
    np.testing.assert_array_equal(w, expected_w.astype(complex))
    np.testing.assert_array_equal(v, expected_v.astype(complex))


def test_eig_of_non_finite_input_is_nan():
    a = np.eye(3)
    a[1, 2] = np.inf
    w, v = jitgrad.jit(np.linalg.eig)(a)
    assert np.all(np.isnan(w)) and np.all(np.isnan(v))


def test_eig_derivatives_of_a_real_matrix():
    """A real matrix with complex eigenvalues: the gradient of a real function of the
    eigenvalues and of the eigenvectors' moduli against central differences, and the
    eigenvalue JVP along a real direction."""
    rng = np.random.default_rng(13)
    a = rng.standard_normal((4, 4))
    c, d = complex_array(rng, 4), rng.standard_normal((4, 4))

    def loss(a):
        w, v = np.linalg.eig(a)
        return np.real(np.sum(c * w)) + np.sum(d * np.abs(v) ** 2)
    h = 1e-6
    expected = np.zeros_like(a)
    for k in range(a.size):
        e = np.zeros_like(a)
        e.flat[k] = h
        expected.flat[k] = (loss(a + e) - loss(a - e)) / (2 * h)
    np.testing.assert_allclose(jitgrad.grad(loss)(a), expected, rtol=1e-6, atol=1e-7)
    direction = rng.standard_normal((4, 4))
    _, dw = jitgrad.jvp(np.linalg.eigvals, (a,), (direction,))
    np.testing.assert_allclose(dw, (np.linalg.eigvals(a + h * direction) - np.linalg.eigvals(a - h * direction))
                               / (2 * h), rtol=1e-6, atol=1e-7)
