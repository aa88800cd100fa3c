import pytest

from deliberate.config import ConfigError, config_from_dict, load_config


def test_defaults_are_valid_and_round_trip():
    cfg = load_config()
    assert cfg.practice.patience >= 1
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("practice:\n  iterations: 500\nlearner:\n  lr: 0.001\n")
    cfg = load_config(p, ["practice.eval_every=25", "run.methods=dp,static,dynamic_unguided",
                          "generator.block_out_channels=[8,16]", "guidance.grad=x0", "learner.ema=true"])
    assert cfg.practice.iterations == 500 and cfg.learner.lr == 1e-3 and cfg.practice.eval_every == 25
    assert cfg.run.methods == ("dp", "static", "dynamic_unguided")
    assert cfg.generator.block_out_channels == (8, 16)
    assert cfg.guidance.grad == "x0" and cfg.learner.ema is True


@pytest.mark.parametrize("override, words", [
    (["practice.iterationz=3"], "unknown config key 'practice.iterationz'"),
    (["bogus.x=1"], "unknown config key 'bogus'"),
    (["practice.iterations=abc"], "practice.iterations: expected an integer"),
    (["practice.iterations=0"], "practice.iterations must be > 0"),
    (["guidance.omega=-1"], "guidance.omega must be finite and >= 0"),
    (["guidance.grad=sideways"], "guidance.grad: 'sideways' is not one of"),
    (["run.methods=dp,unknown"], "unknown method 'unknown'"),
    (["practice.max_samples=10", "practice.initial_samples=100"], "practice.max_samples (10) must be >="),
    (["learner.model=not_a_model_anywhere"], "learner.model: unknown model"),
    (["guidance.window=[0.5,0.2]"], "guidance.window"),
    (["learner.warmup_frac=0.6", "learner.decay_frac=0.6"], "learner.warmup_frac + learner.decay_frac"),
    (["practice.iterations"], "is not of the form"),
])
def test_bad_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, override)
    assert words in str(e.value)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("practice: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    p.write_text("practice:\n  patience: 1.5\n")
    with pytest.raises(ConfigError, match="practice.patience: expected an integer"):
        load_config(p)
