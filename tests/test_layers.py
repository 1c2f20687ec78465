import pytest

from asymprune import layers, variants


def test_sixteen_variants_of_the_paper():
    assert len(variants.PAPER) == 16 == len(set(variants.PAPER))
    assert variants.PAPER[0] == "e6d6"
    assert {"e6d1", "e1d6", "e1d1", "e5d5"} <= set(variants.PAPER)
    # every non-baseline variant prunes the encoder, the decoder or both by the same amount
    for v in variants.PAPER[1:]:
        p = variants.parse_depth(v)
        assert p.enc_sixths == 6 or p.dec_sixths == 6 or p.enc_sixths == p.dec_sixths


@pytest.mark.parametrize("bad", ["e7d1", "e0d3", "e6", "d6e6", "e6d6x", ""])
def test_parse_variant_rejects(bad):
    with pytest.raises(ValueError, match="e\\{E\\}d\\{D\\}"):
        variants.parse_depth(bad)


def test_published_tables_are_the_default_for_flan_depths():
    assert layers.select_sixths(8, 3) == (0, 2, 5, 7)
    assert layers.select_sixths(12, 2) == (0, 3, 8, 11)
    assert layers.select_sixths(24, 1) == (0, 5, 11, 23)
    assert variants.parse_depth("e1d6").blocks(8, 8) == ((0,), tuple(range(8)))


def test_published_table_sizes_follow_floor_of_sixths():
    for n, table in layers.PUBLISHED.items():
        for s, kept in table.items():
            assert len(kept) == layers.sixths_count(n, s)
            assert kept[0] == 0 and list(kept) == sorted(set(kept))


def test_spaced_rule_hand_values():
    # round-half-up(j * (n-1)/(k-1)): n=6,k=3 -> 0, 2.5->3, 5
    assert layers.select_sixths(6, 3) == (0, 3, 5)
    assert layers.select_sixths(6, 4) == (0, 2, 3, 5)  # 0, 1.67->2, 3.33->3, 5
    assert layers.select_sixths(6, 1) == (0,)
    assert layers.select_sixths(6, 6) == tuple(range(6))
    # 10 layers, 3 sixths: floor(10*3/6) = 5 blocks at 0, 2.25->2, 4.5->5, 6.75->7, 9
    assert layers.select_sixths(10, 3) == (0, 2, 5, 7, 9)
    assert layers.select_sixths(12, 2, "spaced") == (0, 4, 7, 11)


def test_published_strategy_refuses_other_depths():
    with pytest.raises(ValueError, match="no published layer table"):
        layers.select_sixths(6, 3, "published")
    with pytest.raises(ValueError, match="unknown layer selection"):
        layers.select_sixths(6, 3, "random")


def test_nash_uniform_low_high():
    assert layers.uniform(12, 2) == (0, 11)
    assert layers.uniform(12, 3) == (0, 5, 11)  # floor(5.5) = 5
    assert layers.uniform(12, 4) == (0, 3, 7, 11)  # floor(3.67), floor(7.33)
    assert layers.uniform(6, 1) == (0,)
    assert layers.low(12, 3) == (0, 1, 2)
    assert layers.high(12, 3) == (9, 10, 11)
    with pytest.raises(ValueError):
        layers.uniform(4, 5)
