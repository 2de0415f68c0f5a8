"""Tests for keras_spela.core.class_vectors: the fixed per-class target vectors."""

import sys

import numpy as np
import pytest

from keras_spela.core import class_vectors as cv


def _assert_unit_rows(vectors, atol=1e-5):
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=atol)


def _off_diagonal_cosines(vectors):
    v = np.asarray(vectors, np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    gram = v @ v.T
    return gram[~np.eye(len(v), dtype=bool)]


# ------------------------------------------------------------------ simplex
@pytest.mark.parametrize("num_classes,dim", [(2, 2), (3, 2), (10, 34), (10, 9), (5, 64), (34, 34)])
def test_simplex_rows_are_unit_with_equal_pairwise_cosine(num_classes, dim):
    vectors = cv.simplex_vectors(num_classes, dim, seed=1)
    assert vectors.shape == (num_classes, dim)
    assert vectors.dtype == np.float32
    _assert_unit_rows(vectors)
    cosines = _off_diagonal_cosines(vectors)
    expected = -1.0 / (num_classes - 1)
    np.testing.assert_allclose(cosines, expected, atol=1e-5)
    np.testing.assert_allclose(cosines.max(), expected, atol=1e-5)
    # A regular simplex is centred: its vectors sum to zero.
    np.testing.assert_allclose(vectors.sum(axis=0), 0.0, atol=1e-5)


def test_simplex_too_many_classes_raises_naming_dim():
    with pytest.raises(ValueError, match="dim"):
        cv.simplex_vectors(12, 10)


def test_simplex_of_100_classes_in_1024_dimensions():
    vectors = cv.simplex_vectors(100, 1024, seed=0)
    _assert_unit_rows(vectors)
    np.testing.assert_allclose(_off_diagonal_cosines(vectors).max(), -1.0 / 99, atol=1e-5)


def test_simplex_seed_changes_the_rotation_only():
    a = cv.simplex_vectors(6, 20, seed=1)
    b = cv.simplex_vectors(6, 20, seed=2)
    assert not np.allclose(a, b)
    # Same Gram matrix: the same simplex, differently embedded.
    np.testing.assert_allclose(a @ a.T, b @ b.T, atol=1e-5)


# ------------------------------------------------------------------ coulomb
@pytest.mark.parametrize("num_classes,dim,seed", [(12, 3, 0), (20, 4, 1), (40, 8, 2)])
def test_coulomb_many_classes_lowers_energy_of_random_start(num_classes, dim, seed):
    assert num_classes > dim + 1
    vectors = cv.coulomb_vectors(num_classes, dim, seed=seed)
    assert vectors.shape == (num_classes, dim)
    assert vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    _assert_unit_rows(vectors)
    start = cv.random_vectors(num_classes, dim, seed=seed)
    relaxed_energy = cv.coulomb_energy(vectors)
    start_energy = cv.coulomb_energy(start)
    assert relaxed_energy < start_energy
    # Much lower, not only by rounding.
    assert relaxed_energy < start_energy * 0.999


def test_coulomb_energy_formula():
    # Square in the plane: 4 sides of length sqrt(2), 2 diagonals of length 2.
    square = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float64)
    assert cv.coulomb_energy(square) == pytest.approx(4 / np.sqrt(2) + 2 / 2)


def test_coulomb_on_sphere_converges_near_known_optimum():
    # Thomson problem, 12 points on S^2: the icosahedron, energy 49.165253.
    vectors = cv.coulomb_vectors(12, 3, seed=0)
    assert cv.coulomb_energy(vectors) == pytest.approx(49.165253, rel=1e-3)


@pytest.mark.parametrize("num_classes,dim", [(10, 34), (5, 4), (3, 2)])
def test_coulomb_few_classes_equals_simplex(num_classes, dim):
    np.testing.assert_array_equal(
        cv.coulomb_vectors(num_classes, dim, seed=7), cv.simplex_vectors(num_classes, dim, seed=7)
    )


# ------------------------------------------------------------- axis_simplex
@pytest.mark.parametrize("num_classes,dim", [(2, 2), (10, 10), (10, 34)])
def test_axis_simplex_positive_part_is_own_axis(num_classes, dim):
    vectors = cv.axis_simplex_vectors(num_classes, dim)
    assert vectors.shape == (num_classes, dim)
    _assert_unit_rows(vectors)
    np.testing.assert_allclose(_off_diagonal_cosines(vectors), -1.0 / (num_classes - 1), atol=1e-5)
    positive = np.maximum(vectors, 0.0)
    for c in range(num_classes):
        # The non-negative part of v_c is along e_c.
        assert positive[c, c] > 0
        others = np.delete(positive[c], c)
        np.testing.assert_array_equal(others, 0.0)
    np.testing.assert_array_equal(vectors[:, num_classes:], 0.0)
    # The reachable cosine with ReLU outputs: cos(e_c, v_c) = sqrt(1 - 1/N).
    np.testing.assert_allclose(np.diag(vectors), np.sqrt(1 - 1 / num_classes), atol=1e-6)


def test_axis_simplex_needs_dim_at_least_num_classes():
    with pytest.raises(ValueError, match="dim"):
        cv.axis_simplex_vectors(10, 9)


# ------------------------------------------------------------------- random
def test_random_vectors_are_unit_gaussian_directions():
    vectors = cv.random_vectors(2000, 16, seed=3)
    assert vectors.shape == (2000, 16)
    assert vectors.dtype == np.float32
    _assert_unit_rows(vectors)
    # Isotropic: mean near 0, per-coordinate variance near 1/d, both signs.
    assert np.all(np.abs(vectors.mean(axis=0)) < 0.03)
    np.testing.assert_allclose((vectors**2).mean(axis=0), 1 / 16, rtol=0.15)
    # Unlike the simplex, pairwise cosines vary.
    assert _off_diagonal_cosines(vectors[:50]).std() > 0.1


def test_random_vectors_match_normalized_gaussian_draw():
    raw = np.random.default_rng(5).standard_normal((7, 9))
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(cv.random_vectors(7, 9, seed=5), expected, rtol=1e-6)


# -------------------------------------------------------------- determinism
@pytest.mark.parametrize(
    "kind,num_classes,dim",
    [("simplex", 10, 34), ("coulomb", 10, 34), ("coulomb", 12, 4), ("random", 10, 34)],
)
def test_same_seed_gives_same_vectors_and_other_seed_differs(kind, num_classes, dim):
    a = cv.make_class_vectors(kind, num_classes, dim, seed=11)
    b = cv.make_class_vectors(kind, num_classes, dim, seed=11)
    c = cv.make_class_vectors(kind, num_classes, dim, seed=12)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_axis_simplex_is_deterministic():
    np.testing.assert_array_equal(
        cv.make_class_vectors("axis_simplex", 4, 6, seed=1),
        cv.make_class_vectors("axis_simplex", 4, 6, seed=2),
    )


# ------------------------------------------------------- make_class_vectors
@pytest.mark.parametrize("kind", cv.KINDS)
def test_make_class_vectors_dispatches_by_name(kind):
    vectors = cv.make_class_vectors(kind, 4, 6, seed=0)
    assert vectors.shape == (4, 6)
    _assert_unit_rows(vectors)


def test_make_class_vectors_unknown_kind_raises():
    with pytest.raises(ValueError, match="Unknown class_vectors='thomson'"):
        cv.make_class_vectors("thomson", 4, 6)


@pytest.mark.parametrize("kind", cv.KINDS)
def test_make_class_vectors_dim_below_two_raises(kind):
    with pytest.raises(ValueError, match="units=1"):
        cv.make_class_vectors(kind, 2, 1)


def test_make_class_vectors_one_class_raises():
    with pytest.raises(ValueError, match="num_classes"):
        cv.make_class_vectors("simplex", 1, 4)


def test_make_class_vectors_accepts_user_unit_array():
    user = cv.random_vectors(3, 5, seed=9).astype(np.float64)
    out = cv.make_class_vectors(user, 3, 5)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, user, rtol=1e-6)
    # Lists work too.
    np.testing.assert_allclose(cv.make_class_vectors(user.tolist(), 3, 5), user, rtol=1e-6)


def test_make_class_vectors_rejects_non_unit_array():
    user = 2.0 * cv.random_vectors(3, 5, seed=9)
    with pytest.raises(ValueError, match="unit-norm"):
        cv.make_class_vectors(user, 3, 5)


def test_make_class_vectors_rejects_zero_row():
    user = cv.random_vectors(3, 5, seed=9)
    user[1] = 0.0
    with pytest.raises(ValueError, match="unit-norm"):
        cv.make_class_vectors(user, 3, 5)


@pytest.mark.parametrize("shape", [(3, 4), (4, 5), (5, 3), (15,), (1, 3, 5)])
def test_make_class_vectors_rejects_wrong_shape(shape):
    user = np.ones(shape, np.float32)
    with pytest.raises(ValueError, match=r"shape.*\(3, 5\)"):
        cv.make_class_vectors(user, 3, 5)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_make_class_vectors_rejects_nan_and_inf(bad):
    user = cv.random_vectors(3, 5, seed=9)
    user[2, 1] = bad
    with pytest.raises(ValueError, match="NaN"):
        cv.make_class_vectors(user, 3, 5)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
