"""The validated option set."""

import pytest

from astra_inr.config import INRConfig, option_help


def test_defaults_are_the_reference_setup():
    cfg = INRConfig()
    assert (cfg.width, cfg.depth, cfg.scale, cfg.learning_rate) == (300, 3, 2.0, "auto")
    assert (cfg.tv_weight, cfg.tv_gradient, cfg.discrepancy) == ("auto", "matched", "auto")
    assert cfg.activation == "bw_relu" and cfg.device == "auto" and cfg.seed == 0


def test_astra_converted_values_are_understood():
    # ASTRA hands a plugin True as 1, None as 'None', numbers as floats.
    cfg = INRConfig.from_options({"Verbose": 1, "MinConstraint": "None", "Width": 64.0,
                                  "Activation": "ReLU", "GPUindex": "None"})
    assert cfg.verbose is True and cfg.min_constraint is None and cfg.width == 64
    assert cfg.activation == "relu" and cfg.gpu_index is None


def test_unknown_option_lists_the_valid_names_and_suggests():
    with pytest.raises(ValueError) as err:
        INRConfig.from_options({"Widht": 10})
    msg = str(err.value)
    assert "'Widht'" in msg and "did you mean 'Width'" in msg and "LearningRate" in msg


@pytest.mark.parametrize("options, fragment", [
    ({"Width": 0}, "Width"),
    ({"Width": 2.5}, "an integer"),
    ({"Scale": -1}, "> 0 or 'auto'"),
    ({"TVWeight": -0.1}, ">= 0 or 'auto'"),
    ({"TVWeight": "strong"}, "a number"),
    ({"LearningRate": "fast"}, "a number"),
    ({"LearningRateDecay": 2}, "(0, 1]"),
    ({"Device": "tpu"}, "'auto' 'cpu' 'cuda'"),
    ({"Activation": "tanh"}, "'bw_relu' 'relu'"),
    ({"MinConstraint": 1, "MaxConstraint": 0}, "below MaxConstraint"),
    ({"Verbose": 3}, "a boolean"),
    ({"MinConstraint": float("nan")}, "finite"),
    ({"RampFloor": 1.5}, "[0, 1]"),
    ({"RampFloor": 0.05, "DataWeighting": "l2"}, "needs DataWeighting='ramp'"),
])
def test_bad_values_name_the_option_and_the_expectation(options, fragment):
    with pytest.raises(ValueError) as err:
        INRConfig.from_options(options)
    assert fragment in str(err.value)


def test_round_trip_and_help_cover_every_option():
    cfg = INRConfig(width=17, min_constraint=0.0)
    again = INRConfig.from_options(cfg.to_options())
    assert again == cfg
    text = option_help()
    for name in cfg.to_options():
        assert name in text


def test_readme_documents_every_option():
    from pathlib import Path
    from astra_inr.config import option_table_markdown
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    # The table is generated from the config: defaults and meanings cannot drift.
    assert option_table_markdown() in readme, (
        "README's option table differs from astra_inr.config.option_table_markdown(); paste it in")
