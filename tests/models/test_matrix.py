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


def test_gpu_column_covers_every_exact_family_within_the_bar():
    from tests.models.matrix import GPU_BAR, gpu_results

    results = gpu_results()
    assert results["card"] and set(results["families"]) == {f.id for f in EXACT}
    for fid, row in results["families"].items():
        assert max(row["prompt_max"], row["greedy_max"]) <= GPU_BAR, fid
        assert row["greedy_tokens"] == "32/32", fid


def test_gpu_results_are_parsed_from_measured_lines(tmp_path):
    from tests.models.matrix import parse_gpu_logs

    log = tmp_path / "models.log"
    log.write_text(
        "noise\nMEASURED qwen2 rotated keys: prompt max|dlogprob|=3.81e-06 over "
        "799 tokens, greedy max|dlogprob|=1.91e-06 over 32/32 tokens (first "
        "divergence: None)\n"
    )
    results = parse_gpu_logs([log], "card")
    assert results["families"] == {
        "qwen2": {
            "prompt_max": 3.81e-06,
            "prompt_tokens": 799,
            "greedy_max": 1.91e-06,
            "greedy_tokens": "32/32",
        }
    }
