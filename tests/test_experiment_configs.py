"""Tests of the experiments' configs (experiments/common/config.py and each study's configs/): a
malformed config string, a bad numeric field or an unknown ``--config.*`` key fails at once, with
a short message that names it and lists what is valid, before any data is loaded or anything is
written; every driver parses its flags through the shared helper."""

import os
import re

import pytest

from dgmjax import data


def _iwae_string(arg):
  from experiments.iwae.configs import mnist
  return mnist.get_config(arg)


def _epochs_string(module, arg):
  import importlib
  return importlib.import_module(f"experiments.discrete.configs.{module}").get_config(arg)


def _collapse_string(arg):
  from experiments.posterior_collapse.configs import default
  return default.get_config(arg)


def _priors_string(arg):
  from experiments.priors.configs import mnist
  return mnist.get_config(arg)


RAISES_CONFIG_STRINGS = [
    ("iwae_string_zero_epochs", lambda: _iwae_string("iwae-k5-l1-e0"),
     ValueError, r"bad config string 'iwae-k5-l1-e0': N in e<N> must be > 0, got '0'\. "
                 r"Valid forms: '<name>.*e<N>"),
    ("iwae_string_nan_epochs", lambda: _iwae_string("iwae-k5-l1-enan"),
     ValueError, r"N in e<N> must be finite, got 'nan'.*Valid forms"),
    ("iwae_string_unknown_budget", lambda: _iwae_string("iwae-k5-l1-long"),
     ValueError, r"the budget must be full, short or e<N>, got 'long'.*Valid forms"),
    ("iwae_string_fractional_k", lambda: _iwae_string("iwae-k5.5-l1-short"),
     ValueError, r"K in k<K> must be an integer, got '5\.5'.*Valid forms"),
    ("iwae_string_unknown_name", lambda: _iwae_string("iwea-k5-l1-short"),
     ValueError, r"unknown name 'iwea'.*Valid forms.*'iwae'"),
    ("iwae_string_three_layers", lambda: _iwae_string("iwae-k5-l3-short"),
     ValueError, r"layers must be l1 or l2, got 'l3'.*Valid forms"),
    ("categorical_string_zero_epochs", lambda: _epochs_string("categorical", "0"),
     ValueError, r"bad config string '0': the number of epochs must be > 0.*Valid forms"),
    ("categorical_string_not_a_number", lambda: _epochs_string("categorical", "ten"),
     ValueError, r"the number of epochs must be a number, got 'ten'.*Valid forms"),
    ("vqvae_string_negative_epochs", lambda: _epochs_string("vqvae", "-3"),
     ValueError, r"the number of epochs must be > 0, got '-3'"),
    ("codebook_string_inf_epochs", lambda: _epochs_string("codebook", "inf"),
     ValueError, r"the number of epochs must be finite"),
    ("posterior_collapse_string_empty_run", lambda: _collapse_string("mlp,,deep"),
     ValueError, r"bad config string 'mlp,,deep': empty run in the list.*Valid forms.*'all'"),
    ("posterior_collapse_string_repeated_run", lambda: _collapse_string("mlp,mlp"),
     ValueError, r"run\(s\) \['mlp'\] named more than once"),
    ("priors_string_unknown_variant", lambda: _priors_string("gmm"),
     ValueError, r"bad config string 'gmm': unknown variant.*Valid forms.*'twod'"),
    ("discrete_quick_string_unknown_study", lambda: _epochs_string("quick", "vq"),
     ValueError, r"bad config string 'vq': unknown study.*'codebook'"),
]


@pytest.mark.parametrize("thunk,exc,match", [c[1:] for c in RAISES_CONFIG_STRINGS],
                         ids=[c[0] for c in RAISES_CONFIG_STRINGS])
def test_malformed_config_string_raises_listing_the_valid_forms(thunk, exc, match):
  with pytest.raises(exc, match=match):
    thunk()


def _driver_config(driver):
  """``(train_and_evaluate-like function, a config of the driver)``."""
  if driver == "iwae":
    from experiments.common import burda
    from experiments.iwae.configs import quick
    return burda.train_and_evaluate, quick.get_config()
  if driver == "priors":
    from experiments.priors import train
    from experiments.priors.configs import quick
    return train.train_and_evaluate, quick.get_config()
  if driver == "posterior_collapse":
    from experiments.posterior_collapse import train
    from experiments.posterior_collapse.configs import quick
    return train.train_and_evaluate, quick.get_config("mlp")
  if driver == "discrete":
    from experiments.discrete import train
    from experiments.discrete.configs import quick
    return train.run, quick.get_config("categorical")
  if driver == "gradient_snr":
    from experiments.gradient_snr import run
    from experiments.gradient_snr.configs import quick
    return run.train_and_evaluate, quick.get_config()
  if driver == "classical":
    from experiments.classical import study
    from experiments.classical.configs import quick
    return study.train_and_evaluate, quick.get_config()
  from experiments.flows import two_d
  from experiments.flows.configs import quick
  return two_d.train_and_evaluate, quick.get_config()


def _set(config, key, value):
  *path, last = key.split(".")
  node = config
  for p in path:
    node = node[p]
  node[last] = value


BAD_FIELDS = [
    ("iwae_eval_num_examples_negative", "iwae", "eval.num_examples", -5,
     r"config\.eval\.num_examples must be an int >= 0, got -5"),
    ("iwae_batch_size_zero", "iwae", "batch_size", 0, r"config\.batch_size must be an int > 0"),
    ("iwae_learning_rate_negative", "iwae", "learning_rate", -1e-3,
     r"config\.learning_rate must be a finite number > 0, got -0\.001"),
    ("iwae_eval_bound_ks_zero", "iwae", "eval.bound_ks", (5, 0),
     r"config\.eval\.bound_ks must be a non-empty list of ints > 0, got \(5, 0\)"),
    ("iwae_checkpoint_every_nan", "iwae", "checkpoint_every_epochs", float("nan"),
     r"config\.checkpoint_every_epochs must be a finite number > 0, got nan"),
    ("priors_surgery_chunk_size_zero", "priors", "surgery.chunk_size", 0,
     r"config\.surgery\.chunk_size must be an int > 0"),
    ("posterior_collapse_eval_num_examples_negative", "posterior_collapse", "eval.num_examples",
     -5, r"config\.eval\.num_examples must be an int >= 0, got -5"),
    ("posterior_collapse_free_bits_negative", "posterior_collapse", "runs.deep.free_bits", -0.1,
     r"config\.runs\.deep\.free_bits must be a finite number >= 0"),
    ("discrete_eval_num_examples_negative", "discrete", "eval.num_examples", -1,
     r"config\.eval\.num_examples must be an int >= 0, got -1"),
    ("gradient_snr_one_draw", "gradient_snr", "toy.num_draws", 1,
     r"config\.toy\.num_draws must be an int > 1, got 1"),
    ("classical_gaps_num_examples_zero", "classical", "gaps.num_examples", 0,
     r"config\.gaps\.num_examples must be an int > 0"),
    ("flows_num_steps_negative", "flows", "num_steps", -10,
     r"config\.num_steps must be an int > 0, got -10"),
]


@pytest.mark.parametrize("driver,key,value,match", [c[1:] for c in BAD_FIELDS],
                         ids=[c[0] for c in BAD_FIELDS])
def test_bad_numeric_config_field_raises_before_any_data_is_loaded(tmp_path, monkeypatch, driver,
                                                                   key, value, match):
  fn, config = _driver_config(driver)
  _set(config, key, value)
  monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data was loaded"))
  work = tmp_path / "work"
  with pytest.raises(ValueError, match=match):
    fn(config, str(work))
  assert not work.exists() or not os.listdir(work)   # nothing written either


def _parse(argv):
  """``experiments.common.config.parse_flags`` on a fresh flag set with a ``--config`` flag."""
  from absl import flags
  from ml_collections import config_flags
  from experiments.common import config as common
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "c", flag_values=fv, lock_config=True,
                                  sys_argv=argv)
  common.parse_flags(argv, fv)
  return fv


@pytest.mark.parametrize("override,match", [
    ("--config.evall.x=1", r"^FATAL Flags parsing error: --config\.evall\.x: unknown config key "
                           r"'evall'; valid keys of --config: .*\bestimator, eval\b"),
    ("--config.eval.num_exmples=3", r"unknown config key 'eval\.num_exmples'; valid keys of "
                                    r"config\.eval: active_threshold, batch_size, bound_ks, "
                                    r"num_examples, num_samples, sample_chunk\n"),
    ("--config.eval.bound_ks.x=3", r"'eval\.bound_ks' is a tuple setting, not a group of keys"),
], ids=["unknown_top_level_key", "unknown_nested_key", "key_below_a_setting"])
def test_unknown_config_key_flag_gives_a_short_message_listing_the_valid_keys(capsys, override,
                                                                              match):
  with pytest.raises(SystemExit) as e:
    _parse(["main", "--config=experiments/iwae/configs/quick.py", override])
  assert e.value.code == 1
  err = capsys.readouterr().err
  assert re.search(match, err), err
  assert "Traceback" not in err and len(err.splitlines()) == 2


def test_config_string_error_flag_gives_its_message_without_a_traceback(capsys):
  with pytest.raises(SystemExit):
    _parse(["main", "--config=experiments/iwae/configs/mnist.py:iwae-k5-l1-e0"])
  err = capsys.readouterr().err
  assert "Traceback" not in err and len(err.splitlines()) == 2
  assert "N in e<N> must be > 0" in err and "Valid forms" in err
  # a valid override still parses
  fv = _parse(["main", "--config=experiments/iwae/configs/quick.py", "--config.eval.batch_size=7"])
  assert fv.config.eval.batch_size == 7


def test_driver_with_an_unknown_config_key_exits_with_two_lines(tmp_path):
  import subprocess
  import sys
  root = os.path.join(os.path.dirname(__file__), "..")
  p = subprocess.run([sys.executable, "-m", "experiments.iwae.main",
                      "--config=experiments/iwae/configs/quick.py", f"--workdir={tmp_path / 'w'}",
                      "--config.evall.x=1"], cwd=root, capture_output=True, text=True, timeout=60)
  assert p.returncode == 1
  assert p.stderr.startswith("FATAL Flags parsing error: --config.evall.x: unknown config key "
                             "'evall'; valid keys of --config: ")
  assert len(p.stderr.splitlines()) == 2 and not (tmp_path / "w").exists()


def test_every_driver_parses_its_flags_through_the_shared_helper():
  import glob
  mains = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "experiments", "*",
                                        "main.py")))
  assert len(mains) >= 8
  for path in mains:
    src = open(path).read()
    assert "common.run(main)" in src and "app.run(main)" not in src, path


# ------------------------------------------------------------------ repeated tuple flags (drivers)


@pytest.mark.parametrize("extra,expected", [
    (["--config.eval.bound_ks=(5,)", "--config.eval.bound_ks=(0, 5)"], (0, 5)),
    (["--config.eval.bound_ks", "(7,)", "--config.eval.bound_ks=(8, 9)"], (8, 9)),
    (["--config.eval.bound_ks=5", "--config.eval.bound_ks=50"], (50,)),
    (["--config.eval.bound_ks=(5, 50, 500)"], (5, 50, 500)),
], ids=["twice", "two_token_form", "scalars", "once"])
def test_a_repeated_tuple_flag_replaces_instead_of_concatenating(extra, expected):
  fv = _parse(["main", "--config=experiments/iwae/configs/quick.py"] + extra
              + ["--config.eval.batch_size=3", "--config.eval.batch_size=4"])
  assert fv.config.eval.bound_ks == expected
  assert fv.config.eval.batch_size == 4   # a scalar flag: the last one, as before
