"""Checks of arguments, with errors that name the argument and the value."""

import numbers


def is_integer(value):
    """Whether `value` is an integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(value, name, minimum=1):
    """`int(value)` for an integer `>= minimum`; ValueError naming `name`."""
    if not is_integer(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, received {name}={value!r}.")
    return int(value)


def pair(value, name):
    """`(a, b)` from a positive integer or a pair of them; ValueError naming
    `name` otherwise."""
    if is_integer(value):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(is_integer(v) and v >= 1 for v in value)
    ):
        raise ValueError(
            f"{name} must be a positive integer or a pair of them, received {name}={value!r}."
        )
    return int(value[0]), int(value[1])


def group_range(groups):
    """`groups` as `(low, high)` with `2 <= low <= high` (an integer `g` is
    `(g, g)`); ValueError otherwise."""
    pair = (groups, groups) if is_integer(groups) else groups
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(is_integer(g) for g in pair)
        or not 2 <= pair[0] <= pair[1]
    ):
        raise ValueError(
            "groups must be an integer >= 2 or a range (low, high) with "
            f"2 <= low <= high, received groups={groups!r}."
        )
    return (int(pair[0]), int(pair[1]))
