"""The MoE layer benchmark compares each row with the dense layer run the same way."""

from experiments.benchmarks.moe_layer import reference_ms

RESULTS = {
    "dense-equivalent": 0.9,
    "dense compiled": 1.2,  # slower than eager: compiled rows still compare with the faster
    "dense graphed": 0.7,
    "MoE native": 3.0,
    "MoE native compiled": 1.8,
    "MoE native graphed": 1.1,
}


def test_each_row_is_compared_with_the_dense_layer_run_its_way():
    assert reference_ms("MoE native", RESULTS) == 0.9
    assert reference_ms("MoE native compiled", RESULTS) == 0.9
    assert reference_ms("MoE native graphed", RESULTS) == 0.7
    assert reference_ms("dense graphed", RESULTS) == 0.7
    assert reference_ms("dense compiled", RESULTS | {"dense compiled": 0.5}) == 0.5
