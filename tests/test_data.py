"""Tests for dgmjax.data: split sizes, published statistics of the staged datasets, errors, and
the checks of image arrays (check_images; training.loop.check_train_images).

The MNIST-family tests read the staged files from ``tests.conftest.shared_data_dir()`` and are
skipped when it is None. Oracles: the counts and pixel means published in shared/data/README.md
and an independent numpy parse of the raw IDX files. The default run reads the
files with ``backend="numpy"`` and exercises the tfds path through its error handling (checksums,
offline failure); preparing the datasets through tensorflow-datasets takes 15 s (MNIST) to
minutes (binarized MNIST) on 2 shared cores, so the tfds-vs-raw-files comparisons are marked
``slow`` (``pytest -m slow tests/test_data.py``; set ``DGMJAX_TFDS_DIR`` to reuse a prepared
cache).
"""

import gzip
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dgmjax import data
from tests import bad_input as bi
from tests.conftest import shared_data_dir


# ----------------------------------------------------------------------------- bad input

RAISES = [
    ("binarize_nan_pixel", lambda: data.binarize(bi.key(), np.array([[0.2, np.nan]], np.float32)),
     ValueError, r"images must be grey levels in \[0, 1\].*nan at index \(0, 1\)"),
    ("binarize_pixel_above_one", lambda: data.binarize(bi.key(), np.array([0.5, 1.5], np.float32)),
     ValueError, r"images must be grey levels in \[0, 1\].*1\.5"),
    ("binarize_negative_pixel", lambda: data.binarize(bi.key(), jnp.array([-0.5, 0.5])),
     ValueError, r"images must be grey levels in \[0, 1\]"),
    ("binarize_uint8_levels", lambda: data.binarize(bi.key(), np.array([0, 128, 255], np.uint8)),
     ValueError, r"divide 8-bit pixels by 255.*2 of 3.*128"),
    ("binarize_inf_pixel", lambda: data.binarize(bi.key(), np.array([np.inf], np.float32)),
     ValueError, r"images must be grey levels"),
    ("binarize_bool_images", lambda: data.binarize(bi.key(), np.array([True, False])),
     TypeError, r"images must have a real floating or integer dtype, got bool"),
    ("binarize_key_an_int", lambda: data.binarize(0, bi.grey_images()),
     TypeError, r"key must be a PRNG key"),
    ("load_name_a_list", lambda: data.load(["digits"], "train"),
     TypeError, r"name must be a dataset name \(a str\)"),
    ("load_digits_missing_data_dir", lambda: data.load("digits", "train", data_dir="/nonexistent"),
     ValueError, r"data_dir='/nonexistent' does not exist"),
]


@bi.raises_cases(RAISES)
def test_concrete_bad_input_raises_naming_the_argument(thunk, exc, match):
  bi.check_raises(thunk, exc, match)


def _binarize_traced():
  x = jnp.array([0.0, 1.0, 0.5, 1.5, -0.5, np.nan])
  return jax.jit(data.binarize)(bi.key(), x), np.array([False] * 3 + [True] * 3)


TRACED_NAN = [
    ("binarize_traced_off_unit_interval", _binarize_traced),
]


@bi.thunk_cases(TRACED_NAN)
def test_traced_bad_input_gives_nan_exactly_there(thunk):
  bi.check_nan_exactly_where_bad(thunk)


def _accept_binary_integer_images():
  b = data.binarize(bi.key(), np.array([0, 1, 1, 0], np.uint8))
  np.testing.assert_array_equal(b, [0.0, 1.0, 1.0, 0.0])
  assert b.dtype == jnp.float32


ACCEPTS = [
    ("binarize_binary_uint8_images", _accept_binary_integer_images),
]


@bi.thunk_cases(ACCEPTS)
def test_valid_input_is_accepted(thunk):
  thunk()


# ----------------------------------------------------------------------------- data directories


def _fake_mnist_cache(cache):
  """A valid-looking array cache of MNIST's test split (two blank images)."""
  data._write_npz("mnist", str(cache), {  # pylint: disable=protected-access
      "test_image": np.zeros((2, 28, 28, 1), np.uint8), "test_label": np.zeros(2, np.uint8)})


def test_missing_explicit_data_dir_raises_even_when_a_cache_exists(tmp_path):
  _fake_mnist_cache(tmp_path / "cache")
  missing = tmp_path / "no_such_folder"
  with pytest.raises(ValueError, match=rf"data_dir='{missing}' does not exist"):
    data.load("mnist", "test", data_dir=missing, cache_dir=tmp_path / "cache")


def test_explicit_data_dir_without_the_dataset_raises_even_when_a_cache_exists(tmp_path):
  _fake_mnist_cache(tmp_path / "cache")
  os.makedirs(tmp_path / "empty")
  with pytest.raises(ValueError, match=r"data_dir='.*empty' holds no copy of 'mnist'"):
    data.load("mnist", "test", data_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
  # without an explicit folder the cache is used as before
  got = data.load("mnist", "test", data_dir=None, cache_dir=tmp_path / "cache")
  assert got["image"].shape == (2, 28, 28, 1)


def test_datasets_constant_has_a_docstring():
  # mkdocstrings (griffe) reads a string literal right after a module-level constant.
  import ast
  import inspect
  tree = ast.parse(inspect.getsource(data))
  body = tree.body
  for i, node in enumerate(body):
    if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "DATASETS":
      doc = body[i + 1]
      assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
      assert "load" in doc.value.value
      return
  pytest.fail("DATASETS not found in dgmjax/data.py")


DATA_DIR = shared_data_dir()
HAS_TFDS = all(importlib.util.find_spec(m) is not None
               for m in ("tensorflow", "tensorflow_datasets"))

needs_data = pytest.mark.skipif(
    DATA_DIR is None, reason="staged datasets not found: set DGMJAX_DATA_DIR or provide "
    "../shared/data next to the repository")
needs_tfds = pytest.mark.skipif(
    not HAS_TFDS, reason="tensorflow-cpu and tensorflow-datasets are not installed")

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
  """Shared cache for prepared tfds data and npz arrays: DGMJAX_TFDS_DIR or a session tmp dir."""
  return os.environ.get("DGMJAX_TFDS_DIR") or str(tmp_path_factory.mktemp("tfds_cache"))


def _files(name, split, cache):
  return data.load(name, split, data_dir=DATA_DIR, cache_dir=cache, backend="numpy")


@pytest.fixture(scope="session")
def tfds_mnist(cache):
  """All MNIST splits prepared through tensorflow-datasets, once per session."""
  if not HAS_TFDS:
    pytest.skip("tensorflow-cpu and tensorflow-datasets are not installed")
  if DATA_DIR is None:
    pytest.skip("staged datasets not found")
  tfds_cache = os.path.join(cache, "via_tfds")
  return {s: data.load("mnist", s, data_dir=DATA_DIR, cache_dir=tfds_cache)
          for s in data.splits("mnist")}


def _raw_idx(path, offset):
  with gzip.open(path, "rb") as f:
    return np.frombuffer(f.read(), np.uint8, offset=offset)


# ------------------------------------------------------------------------------------ digits


def test_digits_splits_shapes_dtypes_ranges():
  sizes = {"train": 1297, "validation": 200, "test": 300}
  for split, n in sizes.items():
    d = data.load("digits", split)
    assert d["image"].shape == (n, 8, 8, 1) and d["image"].dtype == np.float32
    assert d["label"].shape == (n,) and d["label"].dtype == np.int32
    assert d["image"].min() == 0.0 and d["image"].max() == 1.0
    assert set(np.unique(d["label"])) == set(range(10))
  assert sum(sizes.values()) == 1797


def test_digits_splits_are_the_documented_contiguous_blocks():
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  ref = load_digits()
  got = np.concatenate([data.load("digits", s)["image"] for s in ("train", "validation", "test")])
  np.testing.assert_array_equal(got[..., 0] * 16, ref.images)
  np.testing.assert_array_equal(data.load("digits", "test")["label"], ref.target[1497:])


# ------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("args, kwargs, words", [
    (("cifar10", "train"), {}, ["name", "'cifar10'", "mnist", "digits", "binarized_mnist"]),
    (("mnist", "valid"), {}, ["split", "'valid'", "validation", "test"]),
    (("digits", "small1"), {}, ["split", "'small1'", "train"]),
    (("omniglot", "validation"), {}, ["split", "small1"]),
    (("mnist", "train"), {"backend": "torch"}, ["backend", "'torch'", "tfds", "numpy"]),
])
def test_bad_arguments_raise_value_error_naming_allowed_values(args, kwargs, words):
  with pytest.raises(ValueError) as e:
    data.load(*args, **kwargs)
  for w in words:
    assert w in str(e.value)


def test_splits_lists_every_split():
  assert data.splits("mnist") == ("train", "validation", "test")
  assert set(data.DATASETS) == {"digits", "mnist", "binarized_mnist", "fashion_mnist",
                                "omniglot"}
  with pytest.raises(ValueError, match="name"):
    data.splits("svhn")


# ------------------------------------------------------------------------------ staged files


@needs_data
def test_mnist_burda_protocol_counts_and_statistics(cache):
  train, valid, test = (_files("mnist", s, cache) for s in ("train", "validation", "test"))
  assert train["image"].shape == (59600, 28, 28, 1) and train["image"].dtype == np.float32
  assert valid["image"].shape == (400, 28, 28, 1)
  assert test["image"].shape == (10000, 28, 28, 1)
  full = np.concatenate([train["image"], valid["image"]])
  np.testing.assert_allclose(full.mean(dtype=np.float64), 33.3184 / 255, atol=1e-6)
  np.testing.assert_allclose(full.std(dtype=np.float64), 78.5675 / 255, atol=1e-6)
  labels = np.concatenate([train["label"], valid["label"]])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), MNIST_TRAIN_COUNTS)
  np.testing.assert_array_equal(np.bincount(test["label"], minlength=10), MNIST_TEST_COUNTS)
  # Validation is the last 400 training images, unshuffled (oracle: the raw IDX file).
  raw = _raw_idx(os.path.join(DATA_DIR, "mnist", "train-images-idx3-ubyte.gz"), 16)
  raw = raw.reshape(60000, 28, 28, 1)
  np.testing.assert_array_equal(valid["image"], raw[-400:].astype(np.float32) / 255)
  np.testing.assert_array_equal(train["image"][:5], raw[:5].astype(np.float32) / 255)


@needs_data
def test_binarized_mnist_larochelle_splits(cache):
  means = {"train": 0.13056, "validation": 0.13113, "test": 0.13251}
  sizes = {"train": 50000, "validation": 10000, "test": 10000}
  for split in sizes:
    d = _files("binarized_mnist", split, cache)
    assert d["image"].shape == (sizes[split], 28, 28, 1) and d["image"].dtype == np.float32
    assert "label" not in d
    assert set(np.unique(d["image"])) == {0.0, 1.0}
    np.testing.assert_allclose(d["image"].mean(dtype=np.float64), means[split], atol=5e-6)


@needs_data
def test_fashion_mnist_splits(cache):
  train, valid, test = (_files("fashion_mnist", s, cache) for s in ("train", "validation", "test"))
  assert train["image"].shape == (59600, 28, 28, 1) and valid["image"].shape == (400, 28, 28, 1)
  assert test["image"].shape == (10000, 28, 28, 1)
  labels = np.concatenate([train["label"], valid["label"]])
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test["label"], minlength=10), [1000] * 10)
  assert 0.0 <= test["image"].min() and test["image"].max() <= 1.0
  raw = _raw_idx(os.path.join(DATA_DIR, "fashion_mnist", "train-labels-idx1-ubyte.gz"), 8)
  np.testing.assert_array_equal(valid["label"], raw[-400:])


@needs_data
def test_second_load_reads_the_npz_cache_fast(cache):
  _files("mnist", "test", cache)
  start = time.process_time()  # CPU time: robust to other jobs sharing the 2 cores.
  d = _files("mnist", "train", cache)
  assert time.process_time() - start < 1.0
  assert d["image"].shape == (59600, 28, 28, 1)


@needs_data
def test_data_dir_may_be_the_dataset_folder_or_the_env_var(tmp_path, monkeypatch, cache):
  ref = _files("mnist", "test", cache)
  d = data.load("mnist", "test", data_dir=os.path.join(DATA_DIR, "mnist"),
                cache_dir=tmp_path / "a", backend="numpy")
  np.testing.assert_array_equal(d["image"], ref["image"])
  monkeypatch.setenv("DGMJAX_DATA_DIR", DATA_DIR)
  monkeypatch.setenv("DGMJAX_TFDS_DIR", str(tmp_path / "b"))
  d = data.load("mnist", "validation", backend="numpy")
  assert d["image"].shape == (400, 28, 28, 1)
  assert os.path.exists(tmp_path / "b" / "dgmjax_npz")


@pytest.mark.slow
@needs_data
@needs_tfds
def test_tfds_mnist_matches_the_raw_files(tfds_mnist, cache):
  for split in data.splits("mnist"):
    ref = _files("mnist", split, cache)
    got = tfds_mnist[split]
    assert got["image"].dtype == np.float32 and got["label"].dtype == np.int32
    np.testing.assert_array_equal(got["image"], ref["image"])
    np.testing.assert_array_equal(got["label"], ref["label"])


@pytest.mark.slow
@needs_data
@needs_tfds
@pytest.mark.parametrize("name", ["fashion_mnist", "binarized_mnist"])
def test_tfds_other_datasets_match_the_raw_files(name, cache):
  tfds_cache = os.path.join(cache, "via_tfds")
  for split in data.splits(name):
    got = data.load(name, split, data_dir=DATA_DIR, cache_dir=tfds_cache)
    ref = _files(name, split, cache)
    np.testing.assert_array_equal(got["image"], ref["image"])


@needs_tfds
def test_tfds_record_order_matches_tfds_hasher():
  """The reorder of tfds records uses tfds' own stable key hash (no preparation needed)."""
  from tensorflow_datasets.core import hashing  # pylint: disable=g-import-not-at-top

  for split, n in (("train", 3000), ("test", 1000), ("validation", 500)):
    hasher = hashing.Hasher(split)
    expected = sorted(range(n), key=hasher.hash_key)
    np.testing.assert_array_equal(data._tfds_record_order(split, n), expected)  # pylint: disable=protected-access


# -------------------------------------------------------------------------- corrupt / offline


@pytest.fixture
def mnist_copy(tmp_path):
  if DATA_DIR is None:
    pytest.skip("staged datasets not found")
  dst = tmp_path / "copy" / "mnist"
  shutil.copytree(os.path.join(DATA_DIR, "mnist"), dst)
  return dst


@pytest.mark.parametrize("backend", ["numpy", "tfds"])
def test_truncated_file_gives_clear_error(mnist_copy, tmp_path, backend):
  path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
  path.write_bytes(path.read_bytes()[:1000])
  with pytest.raises(ValueError) as e:
    data.load("mnist", "test", data_dir=mnist_copy.parent, cache_dir=tmp_path / "c",
              backend=backend)
  msg = str(e.value)
  assert "t10k-labels-idx1-ubyte.gz" in msg and "4542 bytes" in msg and "1000 bytes" in msg


def test_corrupt_file_gives_checksum_error(mnist_copy, tmp_path):
  path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(path.read_bytes())
  raw[100] ^= 0xFF
  path.write_bytes(bytes(raw))
  with pytest.raises(ValueError) as e:
    data.load("mnist", "test", data_dir=mnist_copy, cache_dir=tmp_path / "c")
  msg = str(e.value)
  assert "Checksum mismatch" in msg and "t10k-labels-idx1-ubyte.gz" in msg
  assert "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6" in msg


def test_named_copy_missing_a_file_never_downloads(mnist_copy, tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("a download was attempted")

  monkeypatch.setattr(socket, "create_connection", no_network)
  os.remove(mnist_copy / "t10k-images-idx3-ubyte.gz")
  with pytest.raises(ValueError, match="Missing file .*t10k-images-idx3-ubyte.gz"):
    data.load("mnist", "test", data_dir=mnist_copy, cache_dir=tmp_path / "c")


def test_data_dir_without_the_dataset_is_explained(tmp_path):
  with pytest.raises(ValueError, match="holds no copy of 'fashion_mnist'"):
    data.load("fashion_mnist", "train", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_offline_download_fails_fast_with_help(tmp_path, monkeypatch):
  def unreachable(*args, **kwargs):
    raise OSError("[Errno 101] Network is unreachable")

  monkeypatch.setattr(socket, "create_connection", unreachable)
  monkeypatch.delenv("DGMJAX_DATA_DIR", raising=False)
  start = time.perf_counter()
  with pytest.raises(ConnectionError) as e:
    data.load("mnist", "test", cache_dir=tmp_path / "empty")
  assert time.perf_counter() - start < 10.0
  msg = str(e.value)
  assert "data_dir=" in msg and "DGMJAX_DATA_DIR" in msg and "unreachable" in msg


def test_numpy_backend_without_local_copy_is_explained(tmp_path, monkeypatch):
  monkeypatch.delenv("DGMJAX_DATA_DIR", raising=False)
  with pytest.raises(ValueError, match="DGMJAX_DATA_DIR"):
    data.load("binarized_mnist", "test", cache_dir=tmp_path, backend="numpy")


# ----------------------------------------------------------------------------------- binarize


def test_binarize_is_bernoulli_with_the_pixel_mean():
  x = jnp.tile(jnp.linspace(0.0, 1.0, 11, dtype=jnp.float32), (20000, 1))
  b = data.binarize(jax.random.key(0), x)
  assert b.shape == x.shape and b.dtype == jnp.float32
  assert set(np.unique(np.asarray(b))) <= {0.0, 1.0}
  # Per-column mean equals the grey level (binomial std <= 0.0036 over 20000 draws).
  np.testing.assert_allclose(np.asarray(b.mean(axis=0)), np.linspace(0, 1, 11), atol=0.015)
  assert float(b[:, 0].max()) == 0.0 and float(b[:, -1].min()) == 1.0


@needs_data
def test_binarize_mnist_batch_keeps_the_mean(cache):
  x = _files("mnist", "validation", cache)["image"]
  key1, key2 = jax.random.split(jax.random.key(1))
  b1 = jax.jit(data.binarize)(key1, x)
  b2 = jax.jit(data.binarize)(key2, x)
  assert b1.dtype == jnp.float32 and b1.shape == x.shape
  np.testing.assert_allclose(float(b1.mean()), float(x.mean()), atol=2e-3)
  assert not np.array_equal(np.asarray(b1), np.asarray(b2))  # a fresh draw per key


# -------------------------------------------------------------------------------------- import


def test_module_imports_no_training_stack_or_tensorflow():
  code = ("import sys, importlib.util as u; "
          "spec = u.spec_from_file_location('d', sys.argv[1]); m = u.module_from_spec(spec); "
          "spec.loader.exec_module(m); m.load('digits', 'test'); "
          "print(sorted(k for k in ('flax', 'optax', 'tensorflow', 'tensorflow_datasets', 'jax')"
          " if k in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code, data.__file__], capture_output=True,
                       text=True, check=True)
  assert out.stdout.strip() == "[]"


def test_preparation_lock_excludes_other_processes(tmp_path):
  """While one process prepares a dataset, another cannot take the same lock (it waits)."""
  lock = tmp_path / "dgmjax_npz" / "mnist.lock"
  probe = ("import fcntl, sys\n"
           "f = open(sys.argv[1], 'a')\n"
           "try:\n"
           "  fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
           "except BlockingIOError:\n"
           "  sys.exit(3)\n")
  with data._exclusive(str(lock)):
    held = subprocess.run([sys.executable, "-c", probe, str(lock)], check=False)
  free = subprocess.run([sys.executable, "-c", probe, str(lock)], check=False)
  assert held.returncode == 3 and free.returncode == 0


@needs_data
def test_concurrent_loads_share_one_preparation(tmp_path):
  code = ("import sys, numpy as np\n"
          "from dgmjax import data\n"
          "x = data.load('mnist', 'test', data_dir=sys.argv[1], cache_dir=sys.argv[2],"
          " backend='numpy')['image']\n"
          "print(float(np.mean(x)), x.shape[0])\n")
  procs = [subprocess.Popen([sys.executable, "-c", code, DATA_DIR, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True) for _ in range(2)]
  outs = [p.communicate(timeout=300)[0].split() for p in procs]
  assert all(p.returncode == 0 for p in procs)
  assert outs[0] == outs[1] and outs[0][1] == "10000"
  npz = "mnist-v%d.npz" % data._NPZ_VERSION
  assert sorted(os.listdir(tmp_path / "dgmjax_npz")) == [npz, npz + ".sha256.json", "mnist.lock"]


# ----------------------------------------------------------------------------- image checks


def _grey(n, seed=0):
  return np.random.default_rng(seed).uniform(size=(n, 4, 4, 1)).astype(np.float32)


def test_check_images_accepts_unit_interval_and_scales_uint8():
  out = data.check_images(np.full((2, 4, 4, 1), 255, np.uint8), image_shape=(4, 4, 1))
  assert out.dtype == np.float32 and np.all(out == 1.0)
  data.check_images(_grey(3), image_shape=(4, 4, 1))
  data.check_images(_grey(3).reshape(3, 16), image_shape=(4, 4, 1))


@pytest.mark.parametrize("images, match", [
    (np.zeros((0, 4, 4, 1), np.float32), "empty"),
    (np.full((2, 4, 4, 1), 2.0, np.float32), r"\[0, 1\].*\[2, 2\]"),
    (np.full((2, 4, 4, 1), -0.5, np.float32), "Bernoulli"),
    (np.zeros((2, 5, 5, 1), np.float32), "expects images of shape"),
    (np.full((2, 4, 4, 1), np.nan, np.float32), "non-finite"),
])
def test_check_images_rejects_bad_data(images, match):
  with pytest.raises(ValueError, match=match):
    data.check_images(images, name="mnist/train image", image_shape=(4, 4, 1))


def test_check_train_images_checks_the_support_and_returns_the_array():
  from dgmjax.training import loop  # pylint: disable=import-outside-toplevel
  x = _grey(3)
  assert loop.check_train_images(x) is x
  assert loop.check_train_images(x, dynamic_binarization=True) is x
  with pytest.raises(TypeError, match="train_images must be an array"):
    loop.check_train_images(x.tolist())
  with pytest.raises(ValueError, match="non-empty"):
    loop.check_train_images(np.zeros((0, 4), np.float32))
  with pytest.raises(ValueError, match=r"uint8 array .*data\.check_images"):
    loop.check_train_images(np.full((2, 4, 4, 1), 255, np.uint8), dynamic_binarization=True)
  with pytest.raises(ValueError, match="train_images"):
    loop.check_train_images(np.full((2, 4, 4, 1), 2.0, np.float32), dynamic_binarization=True)


# --------------------------------------------------------------------- the verified array cache


def _idx_gz(path, array, magic):
  header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
  """A small MNIST-format dataset in tmp (410 train, 20 test images) whose checksums replace the
  real ones: ``(data_dir, cache_dir)``."""
  import hashlib
  folder = tmp_path / "src" / "mnist"
  folder.mkdir(parents=True)
  rng = np.random.RandomState(0)
  files = {}
  for prefix, n in (("train", 410), ("t10k", 20)):
    _idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", rng.randint(0, 200, (n, 28, 28)), 2051)
    _idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.randint(0, 10, (n,)), 2049)
  for path in sorted(folder.iterdir()):
    raw = path.read_bytes()
    files[path.name] = (len(raw), hashlib.sha256(raw).hexdigest())
  monkeypatch.setitem(data._FILES, "mnist", files)  # pylint: disable=protected-access
  return tmp_path / "src", tmp_path / "cache"


def _cache_file(cache):
  version = data._NPZ_VERSION  # pylint: disable=protected-access
  return cache / "dgmjax_npz" / f"mnist-v{version}.npz"


def _tamper(cache, **changes):
  path = _cache_file(cache)
  with np.load(path) as f:
    arrays = {k: f[k] for k in f.files}
  for k, v in changes.items():
    if v is None:
      del arrays[k]
    else:
      arrays[k] = v(arrays[k])
  np.savez(path, **arrays)


@pytest.mark.parametrize("changes", [
    dict(test_image=lambda a: np.full_like(a, 255)),            # all-white test images
    dict(test_label=None),                                     # labels missing
    dict(test_label=lambda a: (a + 1) % 10),                   # labels mismatched
    dict(test_label=lambda a: a[:5]),                          # fewer labels than images
], ids=["white_images", "missing_labels", "shifted_labels", "short_labels"])
def test_a_tampered_cache_is_rebuilt_from_the_sources(fake_mnist, changes):
  src, cache = fake_mnist
  ref = data.load("mnist", "test", data_dir=src, cache_dir=cache, backend="numpy")
  assert os.path.exists(str(_cache_file(cache)) + ".sha256.json")
  _tamper(cache, **changes)
  got = data.load("mnist", "test", data_dir=src, cache_dir=cache, backend="numpy")
  np.testing.assert_array_equal(got["image"], ref["image"])
  np.testing.assert_array_equal(got["label"], ref["label"])
  again = data.load("mnist", "test", data_dir=src, cache_dir=cache, backend="numpy")  # rebuilt
  np.testing.assert_array_equal(again["label"], ref["label"])


@pytest.mark.parametrize("what", ["white_images", "no_record"])
def test_a_tampered_cache_without_its_sources_is_refused_naming_the_file(fake_mnist, monkeypatch,
                                                                        what):
  src, cache = fake_mnist
  data.load("mnist", "test", data_dir=src, cache_dir=cache, backend="numpy")
  if what == "white_images":
    _tamper(cache, test_image=lambda a: np.full_like(a, 255))
    why = r"array 'test_image' does not match its record: sha256"
  else:
    os.remove(str(_cache_file(cache)) + ".sha256.json")
    why = "its checksum record .* is missing"
  monkeypatch.delenv("DGMJAX_DATA_DIR", raising=False)
  with pytest.raises(ValueError, match=f"array cache .*mnist-v2.npz.* failed its check \\({why}"
                                       r".*Delete .*data_dir="):
    data.load("mnist", "test", cache_dir=cache, backend="numpy")


def test_an_intact_cache_is_served_without_the_sources(fake_mnist, monkeypatch):
  src, cache = fake_mnist
  ref = data.load("mnist", "validation", data_dir=src, cache_dir=cache, backend="numpy")
  monkeypatch.delenv("DGMJAX_DATA_DIR", raising=False)
  got = data.load("mnist", "validation", cache_dir=cache, backend="numpy")
  assert got["image"].shape == (400, 28, 28, 1)   # the last 400 of the 410 training images
  np.testing.assert_array_equal(got["label"], ref["label"])
