"""Fixed per-class target vectors ("symmetric vectors") for SPELA layers.

Every SPELA layer owns one fixed unit vector per class, in the space of its
outputs. The paper places N vectors on the unit sphere of R^d at minimum
Coulomb energy (the Thomson problem). For N <= d + 1 the regular simplex is
the known optimum of every such energy, so it is built here in closed form;
for N > d + 1 a vectorised energy relaxation is used.

All functions are plain, seeded numpy: the same seed gives the same vectors.
"""

import numpy as np

KINDS = ("simplex", "coulomb", "axis_simplex", "random")


def simplex_vectors(num_classes, dim, seed=0):
    """Regular simplex: `num_classes` unit vectors with pairwise cosine `-1/(N-1)`.

    The centred identity of size N spans an (N-1)-dimensional subspace; an
    orthonormal basis of that subspace is mapped into R^dim by a random
    orthonormal map drawn from `seed`.

    Args:
        num_classes: N, the number of vectors (at least 2).
        dim: d, the dimension of each vector. Needs `N <= d + 1`.
        seed: integer seed of the random orthonormal embedding.

    Returns:
        float32 array of shape `(num_classes, dim)` with unit rows.

    Example:

    >>> v = simplex_vectors(10, 34)
    >>> round(float((v @ v.T)[0, 1]), 6)
    -0.111111
    """
    _check_counts(num_classes, dim)
    if num_classes > dim + 1:
        raise ValueError(
            f"A regular simplex of num_classes={num_classes} vectors needs "
            f"dim >= num_classes - 1, received dim={dim}. Use more units or "
            "class_vectors='coulomb'."
        )
    basis = _simplex_basis(num_classes)  # (N, N-1), rows are simplex points
    rng = np.random.default_rng(seed)
    embedding, _ = np.linalg.qr(rng.standard_normal((dim, num_classes - 1)))
    vectors = basis @ embedding.T
    return _unit_rows(vectors)


def axis_simplex_vectors(num_classes, dim):
    """Simplex aligned with the coordinate axes: `v_c ∝ e_c - mean(e)`.

    The same pairwise cosine as `simplex_vectors`, but each vector's only
    positive coordinate is its own class's axis. The non-negative part of
    `v_c` is then `e_c` itself, so the outputs of a ReLU-like activation can
    reach a cosine of `sqrt(1 - 1/N)` with their own class vector while the
    classes stay orthogonal in the reachable (non-negative) orthant. Needs
    `dim >= num_classes`; extra dimensions stay zero.

    Args:
        num_classes: N, the number of vectors.
        dim: d, the dimension of each vector (`d >= N`).

    Returns:
        float32 array of shape `(num_classes, dim)` with unit rows.
    """
    _check_counts(num_classes, dim)
    if num_classes > dim:
        raise ValueError(
            f"class_vectors='axis_simplex' needs dim >= num_classes, "
            f"received num_classes={num_classes}, dim={dim}."
        )
    vectors = np.zeros((num_classes, dim))
    vectors[:, :num_classes] = np.eye(num_classes) - 1.0 / num_classes
    return _unit_rows(vectors)


def random_vectors(num_classes, dim, seed=0):
    """Gaussian random unit vectors (the paper's ablation)."""
    _check_counts(num_classes, dim)
    rng = np.random.default_rng(seed)
    return _unit_rows(rng.standard_normal((num_classes, dim)))


def coulomb_vectors(num_classes, dim, seed=0, steps=2000, step_size=0.1):
    """Minimum Coulomb-energy unit vectors (the paper's "symmetric vectors").

    For `num_classes <= dim + 1` the regular simplex is returned: it is the
    exact minimiser. Otherwise random points are relaxed by projected gradient
    descent on the energy `sum_{i<j} 1 / ||v_i - v_j||`, fully vectorised.

    Args:
        num_classes: N, the number of vectors.
        dim: d, the dimension of each vector.
        seed: integer seed of the random start (or of the simplex embedding).
        steps: maximum number of relaxation steps.
        step_size: initial step size; halved whenever a step raises the energy.

    Returns:
        float32 array of shape `(num_classes, dim)` with unit rows.
    """
    _check_counts(num_classes, dim)
    if num_classes <= dim + 1:
        return simplex_vectors(num_classes, dim, seed=seed)
    points = random_vectors(num_classes, dim, seed=seed).astype(np.float64)
    energy = coulomb_energy(points)
    for _ in range(steps):
        # For unit rows ||v_i - v_j||^2 = 2 - 2 v_i.v_j: O(N^2) memory.
        weights = _pairwise_distances(points) ** -3.0
        np.fill_diagonal(weights, 0.0)
        force = points * weights.sum(axis=1, keepdims=True) - weights @ points
        # Keep only the tangential part, so the step moves along the sphere.
        force -= (force * points).sum(axis=1, keepdims=True) * points
        candidate = _unit_rows(points + step_size * force, np.float64)
        candidate_energy = coulomb_energy(candidate)
        if candidate_energy < energy:
            change = energy - candidate_energy
            points, energy = candidate, candidate_energy
            if change < 1e-10 * energy:
                break
        else:
            step_size *= 0.5
            if step_size < 1e-8:
                break
    return points.astype(np.float32)


def coulomb_energy(vectors):
    """Coulomb energy `sum_{i<j} 1 / ||v_i - v_j||` of a set of vectors."""
    vectors = np.asarray(vectors, np.float64)
    upper = np.triu_indices(len(vectors), k=1)
    return float((1.0 / _pairwise_distances(vectors)[upper]).sum())


def _pairwise_distances(vectors):
    squared = (vectors**2).sum(axis=1)
    gram = vectors @ vectors.T
    dist2 = squared[:, None] + squared[None, :] - 2.0 * gram
    np.fill_diagonal(dist2, 1.0)  # the diagonal is never used
    return np.sqrt(np.maximum(dist2, 1e-24))


def make_class_vectors(kind, num_classes, dim, seed=0):
    """Builds class vectors by name, or checks a given array.

    Args:
        kind: one of `"simplex"`, `"coulomb"`, `"axis_simplex"`, `"random"`,
            or an array of shape `(num_classes, dim)` with unit-norm rows.
        num_classes: number of classes.
        dim: dimension of the layer's outputs.
        seed: integer seed.

    Returns:
        float32 array of shape `(num_classes, dim)`.
    """
    if isinstance(kind, str):
        if kind == "simplex":
            return simplex_vectors(num_classes, dim, seed)
        if kind == "coulomb":
            return coulomb_vectors(num_classes, dim, seed)
        if kind == "axis_simplex":
            return axis_simplex_vectors(num_classes, dim)
        if kind == "random":
            return random_vectors(num_classes, dim, seed)
        raise ValueError(
            f"Unknown class_vectors={kind!r}. Expected one of {KINDS} or an "
            "array of shape (num_classes, units)."
        )
    return check_class_vectors(kind, num_classes, dim)


def grouped_class_vectors(num_classes, channels, dim, groups, seed=0):
    """Class vectors of the paper's class grouping, one set per channel.

    Channel `c` draws a number of groups `g_c` uniformly from the range
    `groups`, deals the classes at random onto its groups (every group gets
    `N // g_c` or one more) and gives each group a vertex of a regular simplex
    in `R^dim`; a class's vector in channel `c` is its group's vertex.

    Args:
        num_classes: N.
        channels: the number of channels C.
        dim: the projection dimension d (`d >= max(groups) - 1`).
        groups: `(low, high)`, both included, `2 <= low <= high <= N`.
        seed: integer seed of the counts, the grouping and the simplices.

    Returns:
        float32 array `(channels, num_classes, dim)` with unit rows.

    Example:

    >>> v = grouped_class_vectors(10, 4, 16, (2, 5), seed=0)
    >>> v.shape
    (4, 10, 16)
    """
    low, high = groups
    if not 2 <= low <= high:
        raise ValueError(
            f"groups must be a count >= 2 or a range (low, high) with 2 <= low <= "
            f"high, received groups={tuple(groups)}."
        )
    if high > num_classes:
        raise ValueError(
            f"groups={tuple(groups)} asks for up to {high} class groups, more than "
            f"the {num_classes} classes."
        )
    if dim < high - 1:
        raise ValueError(
            f"projection_dim={dim} is too small for {high} group vectors (a "
            f"simplex of {high} vertices needs projection_dim >= {high - 1})."
        )
    rng = np.random.default_rng(seed)
    vectors = np.zeros((channels, num_classes, dim), np.float32)
    for channel in range(channels):
        count = int(rng.integers(low, high + 1))
        group_of_class = rng.permutation(num_classes) % count
        vertices = simplex_vectors(count, dim, seed=int(rng.integers(2**31 - 1)))
        vectors[channel] = vertices[group_of_class]
    return vectors


def check_class_vectors(vectors, num_classes, dim):
    """Checks a user-given class-vector array: shape, finiteness, unit norm."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (num_classes, dim):
        raise ValueError(
            f"class_vectors must have shape (num_classes, units) = "
            f"({num_classes}, {dim}), received shape {vectors.shape}."
        )
    if not np.all(np.isfinite(vectors)):
        raise ValueError("class_vectors contains NaN or infinite values.")
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=1e-4):
        raise ValueError(
            "class_vectors rows must be unit-norm; received norms in "
            f"[{norms.min():.4g}, {norms.max():.4g}]."
        )
    return vectors


def _simplex_basis(num_classes):
    centred = np.eye(num_classes) - 1.0 / num_classes
    # The first N-1 right singular vectors span the centred subspace.
    _, _, vt = np.linalg.svd(centred)
    return centred @ vt[: num_classes - 1].T


def _check_counts(num_classes, dim):
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, received {num_classes}.")
    if int(dim) < 2:
        raise ValueError(
            f"A SPELA layer needs at least 2 output dimensions to separate "
            f"classes by cosine, received units={dim}."
        )


def _unit_rows(vectors, dtype=np.float32):
    vectors = np.asarray(vectors, np.float64)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(dtype)
