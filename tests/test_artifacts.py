"""The artifact helpers: the one byte formatter (binary units)."""

import pytest

from tinycourse.artifacts import format_bytes


@pytest.mark.parametrize("n, text", [
    (0, "0 B"),
    (1, "1 B"),
    (1023, "1023 B"),
    (1024, "1.0 KiB"),
    (1536, "1.5 KiB"),
    (5 * 2**20, "5.0 MiB"),
    (2**20 + 100 * 2**10, "1.1 MiB"),  # one decimal above bytes
    (3 * 2**30 + 2**29, "3.5 GiB"),
    (2 * 2**40, "2.0 TiB"),
])
def test_format_bytes_uses_binary_units(n, text):
    assert format_bytes(n) == text


def test_format_bytes_steps_up_a_unit_at_1024_not_1000():
    assert format_bytes(1000) == "1000 B"
    assert format_bytes(1000 * 2**20) == "1000.0 MiB"
    assert format_bytes(2**30) == "1.0 GiB"
