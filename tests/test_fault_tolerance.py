"""Training survives faults without a silent wrong result: corrupt or truncated checkpoints fall back
to the newest intact one, a workdir is trained into by one process at a time, a run that diverges
from its first steps stops with a message naming what to change, a torn metrics line does not block
resume, and settings that cannot train are refused before any work."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import optax
import pytest

from dgmjax import losses, training
from dgmjax.models import vae


def _fit(workdir, **kw):
  model = vae.VAE((4, 4, 1), (2,), ((8,),))
  images = np.random.default_rng(0).uniform(size=(64, 4, 4, 1)).astype(np.float32)
  kw.setdefault("optimizer", optax.adam(1e-3))
  return training.fit(losses.make_loss(model, "iwae", 3), model.init(jax.random.key(0)), images,
                      num_steps=kw.pop("num_steps", 12), batch_size=8, seed=3,
                      workdir=str(workdir), dynamic_binarization=True, checkpoint_every=4,
                      log_every=2, **kw)


def _largest_file(step_dir):
  files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  return max(files, key=os.path.getsize)


def _same(a, b):
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """The uninterrupted 12-step run that every resumed run must equal (only read: shared)."""
  workdir = tmp_path_factory.mktemp("full")
  state, _ = _fit(workdir)
  return state, workdir


@pytest.mark.parametrize("damage", ["flipped_bit", "truncated"])
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, damage,
                                                                        full_run):
  full, _ = full_run
  _fit(tmp_path / "run", stop_after=10)                     # checkpoints at steps 4 and 8
  ckpts = tmp_path / "run" / "checkpoints"
  assert sorted(os.listdir(ckpts)) == ["4", "8"]
  path = _largest_file(ckpts / "8")
  blob = bytearray(open(path, "rb").read())
  if damage == "flipped_bit":
    blob[len(blob) // 2] ^= 0x10
  else:
    blob = blob[: len(blob) // 2]
  open(path, "wb").write(bytes(blob))
  assert training.verify_checkpoint(str(tmp_path / "run"), 8) is not None
  assert training.verify_checkpoint(str(tmp_path / "run"), 4) is None
  resumed, summary = _fit(tmp_path / "run", resume=True)
  assert summary["resumed_from"] == 4
  _same(full, resumed)                                       # still bit-identical to the full run
  events = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert any(e.get("event") == "corrupt_checkpoint_skipped" and e["checkpoint_step"] == 8
             for e in events)
  # the corrupt step was rewritten by the resumed run; every checkpoint now verifies
  params, _, step = training.restore(str(tmp_path / "run"))
  assert step == 12 and training.verify_checkpoint(str(tmp_path / "run"), 8) is None


def test_no_intact_checkpoint_stops_with_a_clear_message(tmp_path):
  _fit(tmp_path, stop_after=8)
  for s in ("4", "8"):
    path = _largest_file(tmp_path / "checkpoints" / s)
    open(path, "wb").write(b"\0" * 16)
  with pytest.raises(RuntimeError, match=r"no intact checkpoint.*step 8.*step 4"):
    _fit(tmp_path, resume=True)
  with pytest.raises(ValueError, match="step 4 is corrupt"):
    training.restore(str(tmp_path), step=4)


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path, full_run):
  full, full_dir = full_run
  _fit(tmp_path / "run", stop_after=10)
  with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
    f.write('{"step": 12, "lo')                             # killed mid-write
  resumed, summary = _fit(tmp_path / "run", resume=True)
  assert summary["resumed_from"] == 8
  _same(full, resumed)
  assert (open(full_dir / "metrics.jsonl").read()
          == open(tmp_path / "run" / "metrics.jsonl").read())


def test_a_second_process_in_the_same_workdir_fails_fast_naming_the_holder(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      from dgmjax import losses, training
      lock = training.WorkdirLock({str(tmp_path)!r}).acquire()
      print("locked", flush=True)
      time.sleep(60)
      """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(training.WorkdirLockedError, match=rf"pid {holder.pid}"):
      _fit(tmp_path)
  finally:
    holder.kill()
    holder.wait()
  _, summary = _fit(tmp_path, num_steps=4)                  # the lock dies with its holder
  assert summary["steps"] == 4


def test_a_run_ruined_at_its_first_step_names_the_learning_rate(tmp_path):
  with pytest.raises(training.NonFiniteError, match=r"learning rate.*No checkpoint was written"):
    _fit(tmp_path, optimizer=optax.sgd(1e12), max_consecutive_nonfinite=3, num_steps=40)


@pytest.mark.parametrize("lr", [-1e-3, 0.0, float("nan"), float("inf")])
def test_learning_rates_that_cannot_train_are_refused(lr):
  with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
    training.make_optimizer("adam", lr)
  with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
    training.make_optimizer("adam", optax.constant_schedule(lr))


def test_a_full_disk_is_reported_before_training(tmp_path, monkeypatch):
  import shutil
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
  with pytest.raises(OSError, match="MiB free"):
    _fit(tmp_path)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_resume_refuses_a_config_that_changes_what_is_trained(tmp_path):
  cfg = {"seed": 0, "optim": {"learning_rate": 1e-3}, "num_samples": 5, "eval": {"k": 5000}}
  assert training.record_config(str(tmp_path), cfg, resume=False) == cfg
  same = training.record_config(str(tmp_path), dict(cfg, eval={"k": 100}), resume=True,
                                ignore=("eval.*",))
  assert "resume_changes" not in same
  changed = dict(cfg, seed=1, optim={"learning_rate": 3e-4})
  with pytest.raises(ValueError, match=r"optim.learning_rate: 0.001 -> 0.0003; seed: 0 -> 1"):
    training.record_config(str(tmp_path), changed, resume=True)
  with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
    training.record_config(str(tmp_path), changed, resume=True, allow_changes=("optim.*",))
  kept = training.record_config(str(tmp_path), changed, resume=True, allow_changes=True,
                                ignore=("eval.*",))
  assert kept["resume_changes"] == [{"optim.learning_rate": {"saved": 1e-3, "now": 3e-4},
                                     "seed": {"saved": 0, "now": 1}}]
  assert json.load(open(tmp_path / "config.json"))["resume_changes"] == kept["resume_changes"]
  # a fresh (non-resumed) run simply records its config
  assert training.record_config(str(tmp_path), cfg, resume=False) == cfg


def test_a_nan_learning_rate_is_never_checkpointed_or_returned(tmp_path):
  # The gradients are finite but the update is not (Adam with a NaN learning rate): the NaN
  # parameters are caught before the checkpoint, with a message naming the learning rate.
  import optax  # pylint: disable=import-outside-toplevel
  from dgmjax import training  # pylint: disable=import-outside-toplevel
  from dgmjax.models import vae  # pylint: disable=import-outside-toplevel
  model = vae.VAE((4, 4, 1), (2,), ((4,),))
  params = model.init(jax.random.key(0))
  x = (np.arange(64).reshape(4, 4, 4, 1) % 3 == 0).astype(np.float32)
  loss = losses.make_loss(model, "iwae", 2)
  for num_steps in (1, 3):   # fewer steps than max_consecutive_nonfinite: no streak to stop it
    work = tmp_path / f"run{num_steps}"
    with pytest.raises(training.NonFiniteError,
                       match=r"not finite .*learning rate.*(was not written|skipped)"):
      training.fit(loss, params, x, optimizer=optax.adam(float("nan")), num_steps=num_steps,
                   batch_size=2, seed=0, workdir=str(work), checkpoint_every=1, log_every=1)
    ckpts = work / "checkpoints"
    assert not ckpts.exists() or not [d for d in os.listdir(ckpts) if d.isdigit()]
