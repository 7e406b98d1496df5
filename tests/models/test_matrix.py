# SPDX-License-Identifier: Apache-2.0
"""The README's support matrix is the one rendered from the families table."""

from tests.models.families import EXACT, FAMILIES, REFUSED
from tests.models.matrix import README, readme_block, render


def test_readme_matrix_is_rendered_from_the_families_table():
    assert readme_block(README.read_text(encoding="utf-8")) == render(), (
        "README support matrix is stale: run `python -m tests.models.matrix --write`"
    )


def test_every_family_has_one_row_and_a_unique_id():
    ids = [family.id for family in FAMILIES]
    assert len(set(ids)) == len(ids) == len(EXACT) + len(REFUSED)
    assert all(family.refused for family in REFUSED)
    assert all(family.refused is None and family.served for family in EXACT)
