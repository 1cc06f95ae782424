from transferkit.weights._align import align


def items(*specs):
    return [(name, tuple(shape)) for name, shape in specs]


def test_pairs_by_order_and_shape_across_names():
    model = items(("conv.weight", (8, 3, 3, 3)), ("bn.weight", (8,)), ("bn.bias", (8,)), ("fc.weight", (5, 8)))
    source = items(("_stem.weight", (8, 3, 3, 3)), ("_bn0.weight", (8,)), ("_bn0.bias", (8,)), ("_fc.weight", (5, 8)))
    assert align(model, source).pairs == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_suffix_settles_weight_against_bias():
    # Without suffixes, bn.bias could pair with either (8,) tensor of the source.
    model = items(
        ("bn.bias", (8,)),
    )
    source = items(("x.weight", (8,)), ("x.bias", (8,)))
    assert align(model, source).pairs == [(0, 1)]


def test_extra_tensors_are_tolerated():
    model = items(("a.weight", (4, 4)), ("b.weight", (6, 4)), ("c.weight", (2, 6)))
    source = items(("a.weight", (4, 4)), ("aux.weight", (9, 9)), ("b.weight", (6, 4)), ("c.weight", (2, 6)))
    assert align(model, source).pairs == [(0, 0), (1, 2), (2, 3)]


def test_shift_along_equal_shapes_is_reported_not_guessed():
    # Two identical blocks in the model, one in the source: which block gets it is undecidable.
    model = items(("p.weight", (4, 4)), ("q.weight", (4, 4)))
    source = items(
        ("r.weight", (4, 4)),
    )
    result = align(model, source)
    assert result.pairs == []
    assert result.ambiguous == {0: [0, -1], 1: [0, -1]}


def test_head_of_another_size_is_a_mismatch():
    model = items(("f.weight", (4, 4)), ("head.weight", (10, 4)), ("head.bias", (10,)))
    source = items(("g.weight", (4, 4)), ("_fc.weight", (1000, 4)), ("_fc.bias", (1000,)))
    result = align(model, source)
    assert result.pairs == [(0, 0)] and result.mismatched == [(1, 1), (2, 2)]
