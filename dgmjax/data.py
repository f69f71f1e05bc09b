"""Datasets as numpy arrays: tensorflow-datasets, local files, and an embedded default.

Every loader returns a dict of numpy arrays, ``image`` of shape ``[N, H, W, C]`` with dtype
float32 and values in ``[0, 1]`` (for every dataset), and ``label`` (int32, ``[N]``) where the
dataset has labels. Binarization for training is separate: statically binarized MNIST is
already in ``{0, 1}``; for grey-level images draw a fresh binarization per minibatch with
:func:`binarize`. :func:`check_images` validates an image array before any work (it scales
``uint8`` grey levels by ``1/255``).

Sources, in order of preference:

1. ``digits``: the 8x8 digits that ship inside scikit-learn. Needs no files, no network and no
   TensorFlow; the offline default for quickstarts and tests.
2. A local directory of the standard files (MNIST IDX ``.gz``, the binarized-MNIST ``.amat``
   text files, Fashion-MNIST ``.gz``), named by ``data_dir=`` or the environment variable
   ``DGMJAX_DATA_DIR``. It may be the parent folder (containing ``mnist/``, ``fashion_mnist/``,
   ``binarized_mnist/``) or the dataset's folder itself. The files are checked against the
   published sha256 checksums and handed to tensorflow-datasets as its manual-download
   directory, so no download is ever attempted when a local copy is named.
3. tensorflow-datasets downloading over the network. Offline, this fails within seconds with
   a message that says how to point at local files.

Prepared tfds data lives in ``DGMJAX_TFDS_DIR`` (default ``~/tensorflow_datasets``); the final
arrays are also cached as ``<tfds dir>/dgmjax_npz/<name>-v2.npz`` so a second load takes well
under a second. The cache is verified like the source files: when it is written, the sha256,
shape and dtype of each of its arrays go to a record beside it (``<name>-v2.npz.sha256.json``),
and every load checks the arrays it reads against that record. A cache that does not match (an
edited or truncated array, a missing label array, a missing record) is rebuilt from the sources;
where they are not available, :func:`load` refuses it, naming the file and what to do.
``backend="numpy"`` reads the same local files directly with numpy (identical arrays, no
TensorFlow needed, and much faster to prepare: tfds needs minutes for binarized MNIST on two CPU
cores).

TensorFlow and tensorflow-datasets are imported lazily, inside the functions that need them, so
``import dgmjax`` stays fast.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import socket
import tempfile
import zlib
from typing import Any

import numpy as np

__all__ = ["BACKENDS", "DATASETS", "SPLITS", "load", "binarize", "splits", "check_images"]

#: Allowed splits per dataset name.
SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("train", "validation", "test"),
    "mnist": ("train", "validation", "test"),
    "binarized_mnist": ("train", "validation", "test"),
    "fashion_mnist": ("train", "validation", "test"),
    "omniglot": ("train", "test", "small1", "small2"),
}
DATASETS: tuple[str, ...] = tuple(SPLITS)
"""The dataset names :func:`load` accepts: ``digits`` (embedded), ``mnist``, ``binarized_mnist``,
``fashion_mnist`` and ``omniglot`` (the keys of :data:`SPLITS`)."""
BACKENDS = ("tfds", "numpy")

# Deterministic, unshuffled splits of the 1797 scikit-learn digits (the file cycles through the
# ten classes, so contiguous blocks are close to balanced).
_DIGITS_SPLITS = {"train": (0, 1297), "validation": (1297, 1497), "test": (1497, 1797)}

# Number of trailing training images held out as validation (Burda et al. 2016 for MNIST; the
# same convention is used for Fashion-MNIST).
_N_VALIDATION = 400

# Standard files of each dataset: name -> (bytes, sha256). These are exactly the checksums that
# tensorflow-datasets pins for the originals.
_FILES: dict[str, dict[str, tuple[int, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        "train-labels-idx1-ubyte.gz": (
            28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        "t10k-images-idx3-ubyte.gz": (
            1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        "t10k-labels-idx1-ubyte.gz": (
            4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": (
            26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        "train-labels-idx1-ubyte.gz": (
            29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        "t10k-images-idx3-ubyte.gz": (
            4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        "t10k-labels-idx1-ubyte.gz": (
            5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    },
    "binarized_mnist": {
        "binarized_mnist_train.amat": (
            78400000, "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d"),
        "binarized_mnist_valid.amat": (
            15680000, "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2"),
        "binarized_mnist_test.amat": (
            15680000, "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c"),
    },
    # Checksums of the Omniglot zips are left to tensorflow-datasets.
    "omniglot": {
        "images_background.zip": (-1, ""),
        "images_evaluation.zip": (-1, ""),
        "images_background_small1.zip": (-1, ""),
        "images_background_small2.zip": (-1, ""),
    },
}

# Host tfds downloads each dataset from, probed (2 s) before a download is attempted.
_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "binarized_mnist": ("www.cs.toronto.edu", 80),
    "omniglot": ("github.com", 443),
}
_CONNECT_TIMEOUT_S = 2.0

# uint8 storage -> [0, 1] scale.
_SCALE = {"mnist": 255.0, "fashion_mnist": 255.0, "binarized_mnist": 1.0, "omniglot": 255.0}

_NPZ_VERSION = 2  # 2: with a checksum record beside the cache

# sha256 of the canonical uint8 arrays in file order (images [N, 28, 28, 1], labels [N]): the
# tfds path is checked against them, since tfds stores records in a hash-shuffled order.
_ARRAY_SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train_image": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
        "train_label": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
        "test_image": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
        "test_label": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
    },
    "fashion_mnist": {
        "train_image": "2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012",
        "train_label": "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7",
        "test_image": "c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
        "test_label": "3d0e6c6ea990b53b6f8f500a41cac93881d981b315f84578b7d915342ade01e9",
    },
    "binarized_mnist": {
        "train_image": "43490d4d6ac9002727af4426d8748609fdb7e4094fa65ad8d681ea60082a7a5a",
        "validation_image": "069b4f0beb389b776478c3e872b4df71c95ac4be64d7cbe6d32e24ebac8e6d5e",
        "test_image": "ca0294c3b8d984c7a1dc891015a8eea6f37bae59a34e35ea0fc8c47110a8dd86",
    },
}


def splits(name: str) -> tuple[str, ...]:
  """The split names :func:`load` accepts for dataset ``name``."""
  _check_name(name)
  return SPLITS[name]


def load(
    name: str,
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    backend: str = "tfds",
) -> dict[str, np.ndarray]:
  """Loads one split of a dataset as numpy arrays.

  ``image`` is float32 ``[N, H, W, C]`` with values in ``[0, 1]`` for every dataset; ``label``
  is int32 ``[N]`` where the dataset has labels (all but ``binarized_mnist``).

  Datasets and splits:

  * ``digits``: the 1797 8x8 digits shipped with scikit-learn (values 0..16, divided by 16),
    ``[N, 8, 8, 1]``. Unshuffled contiguous splits: ``train`` = rows 0..1296 (1297),
    ``validation`` = rows 1297..1496 (200), ``test`` = rows 1497..1796 (300). Needs neither
    files nor TensorFlow; ``data_dir`` and ``backend`` are ignored.
  * ``mnist``: grey levels divided by 255 (Burda et al. 2016 protocol): ``train`` = the first
    59600 training images, ``validation`` = the last 400, ``test`` = the 10000 ``t10k``
    images. Binarize per minibatch with :func:`binarize`.
  * ``binarized_mnist``: the fixed binarization of Larochelle & Murray (2011), values in
    ``{0, 1}``, no labels; ``train`` 50000, ``validation`` 10000, ``test`` 10000.
  * ``fashion_mnist``: grey levels divided by 255 (Xiao et al. 2017). Same convention as MNIST:
    ``train`` = the first 59600 training images, ``validation`` = the last 400, ``test`` = the
    10000 ``t10k`` images.
  * ``omniglot``: the tensorflow-datasets ``omniglot`` builder (Lake et al. 2015 105x105
    images, not the 28x28 ``chardata.mat`` of Burda et al.), first channel only,
    ``[N, 105, 105, 1]``, as stored (white background = 1.0); ``train`` (background set),
    ``test`` (evaluation set), ``small1``, ``small2``; ``label`` is the character index. Only
    via tfds (network, or a manual directory holding its four zip files).

  Args:
    name: one of :data:`DATASETS`.
    split: one of ``splits(name)``.
    data_dir: local folder of the standard files, used as tfds' manual-download directory
      (never downloads then). Either the parent (containing ``mnist/`` etc.) or the dataset's
      own folder. Defaults to the environment variable ``DGMJAX_DATA_DIR``; if neither is set,
      tfds downloads (after a 2 s connectivity probe that fails fast when offline). A
      ``data_dir`` given here must exist and hold the dataset's files even when the array cache
      already has them (``ValueError`` otherwise: a cache never stands in for a wrong folder).
    cache_dir: where tfds prepares data and the ``.npz`` array cache is kept
      (``<cache_dir>/dgmjax_npz``). Defaults to ``DGMJAX_TFDS_DIR`` or ``~/tensorflow_datasets``.
    backend: ``"tfds"`` (tensorflow-datasets prepares the files) or ``"numpy"`` (the same
      verified local files are parsed directly; needs ``data_dir``; same arrays).

  Returns:
    dict with ``image`` (float32 ``[N, H, W, C]`` in ``[0, 1]``) and, where available,
    ``label`` (int32 ``[N]``).

  Raises:
    ValueError: unknown ``name``, ``split`` or ``backend``; a ``data_dir`` without the expected
      files; a corrupt or truncated file (checksum mismatch or read failure; the message names
      the file and what was expected).
    ConnectionError: the data must be downloaded but the host is unreachable.

  References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
    H. Larochelle, I. Murray. The Neural Autoregressive Distribution Estimator. AISTATS 2011.
    H. Xiao, K. Rasul, R. Vollgraf. Fashion-MNIST: a Novel Image Dataset for Benchmarking
    Machine Learning Algorithms. arXiv:1708.07747, 2017.
    B. M. Lake, R. Salakhutdinov, J. B. Tenenbaum. Human-level concept learning through
    probabilistic program induction. Science 350(6266), 2015.
  """
  _check_name(name)
  if split not in SPLITS[name]:
    raise ValueError(
        f"Unknown split={split!r} for dataset {name!r}; allowed values: {list(SPLITS[name])}.")
  if backend not in BACKENDS:
    raise ValueError(f"Unknown backend={backend!r}; allowed values: {list(BACKENDS)}.")
  for arg, folder in (("data_dir", data_dir), ("cache_dir", cache_dir)):
    if folder is not None and not isinstance(folder, (str, os.PathLike)):
      raise TypeError(f"{arg} must be a folder (a str or os.PathLike) or None, got "
                      f"{type(folder).__name__} {folder!r}")
  if name == "digits":
    if data_dir is not None and os.fspath(data_dir) and not os.path.isdir(
        os.path.expanduser(os.fspath(data_dir))):
      # digits are embedded and read no folder; a missing explicit folder is still a mistake
      raise ValueError(f"data_dir={os.fspath(data_dir)!r} does not exist (or is not a folder)")
    return _load_digits(split)

  if data_dir is not None:
    # An explicit folder is checked first: a cached copy must not stand in for a folder that is
    # missing or holds no copy of the dataset (a typo would otherwise go unnoticed).
    _resolve_manual_dir(name, data_dir)
  cache = _cache_dir(cache_dir)
  keys = _split_keys(name, split)
  arrays, _ = _read_npz(name, cache, keys)
  if arrays is None:
    # One process prepares, others wait and read its cache (parallel test workers, several jobs
    # of one node): two tfds preparations of one dataset in one folder would collide.
    with _exclusive(os.path.join(cache, "dgmjax_npz", f"{name}.lock")):
      arrays, why = _read_npz(name, cache, keys)
      if arrays is None:
        arrays = _rebuild(name, cache, data_dir, backend, why)
  return _select(name, split, arrays, _npz_path(name, cache))


def _rebuild(name, cache, data_dir, backend, why):
  """Prepares the cache afresh; when it was rejected (``why``) and the sources are not available,
  a ValueError names the cache, what was wrong and what to do."""
  if why is None:
    return _prepare(name, cache, data_dir, backend)
  path = _npz_path(name, cache)
  try:
    return _prepare(name, cache, data_dir, backend)
  except (ValueError, ConnectionError, RuntimeError, ImportError, OSError) as e:
    raise ValueError(
        f"The array cache {path!r} failed its check ({why}) and cannot be rebuilt from the "
        f"sources: {e} Delete {path!r} and {_record_path(path)!r}, then load again with "
        f"data_dir= (or DGMJAX_DATA_DIR) naming the original files, or with network access."
    ) from e


@contextlib.contextmanager
def _exclusive(lock_path: str):
  """An exclusive advisory lock on ``lock_path`` (``fcntl.flock``; a no-op where unavailable)."""
  try:
    import fcntl
  except ImportError:  # not POSIX
    yield
    return
  os.makedirs(os.path.dirname(lock_path), exist_ok=True)
  with open(lock_path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _prepare(name, cache, data_dir, backend):
  """Reads ``name`` from local files or tfds and writes the ``.npz`` cache; returns all arrays."""
  manual = _resolve_manual_dir(name, data_dir)
  if backend == "numpy":
    if manual is None:
      raise ValueError(
          f"backend='numpy' reads local files: pass data_dir= or set DGMJAX_DATA_DIR to a "
          f"folder holding {name}/ ({', '.join(_FILES[name])}).")
    if name not in _NUMPY_READERS:
      raise ValueError(f"backend='numpy' does not support {name!r}; use backend='tfds'.")
    _verify_files(name, manual)
    arrays = _NUMPY_READERS[name](manual)
  else:
    if manual is not None:
      _verify_files(name, manual)
    arrays = _load_tfds(name, cache, manual)
  _write_npz(name, cache, arrays)
  return arrays


def binarize(key, images):
  """Dynamic binarization: one Bernoulli draw per pixel, ``x_bin = (u < x)``, u ~ U[0, 1).

  Pure and jittable; call it with a fresh key for every minibatch (Burda et al. 2016). The strict
  ``<`` makes ``P(x_bin = 1) = x`` exactly: a 0 pixel always gives 0 and a 1 pixel always 1.

  .. math:: x_{\\mathrm{bin}} = \\mathbb{1}[u < x], \\quad u \\sim \\mathcal{U}[0, 1)

  Bad input: ``images`` must be grey levels in [0, 1] (8-bit pixels divided by 255). Concrete
  images with NaN, infinite or out-of-range values (e.g. raw uint8 levels 0..255) raise
  ``ValueError`` naming ``images`` and the first bad pixel; traced ones give NaN at those pixels
  (never a silent 0 or 1). A non-numeric dtype raises ``TypeError``.

  Args:
    key: a JAX PRNG key.
    images: grey levels in ``[0, 1]``, any shape (e.g. ``[B, 28, 28, 1]``).

  Returns:
    A JAX array of the shape of ``images`` with values in ``{0, 1}``; dtype follows a floating
    ``images`` (float32 otherwise).

  Raises:
    ValueError: concrete ``images`` outside [0, 1] or not finite.
    TypeError: ``images`` of a bool, complex or non-numeric dtype.

  References:
    Y. Burda, R. Grosse, R. Salakhutdinov. Importance Weighted Autoencoders. ICLR 2016.
  """
  from dgmjax import _checks  # pylint: disable=import-outside-toplevel
  _checks.check_key("key", key)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from dgmjax import _checks  # pylint: disable=g-import-not-at-top

  concrete = _checks.is_concrete(images)
  images = jnp.asarray(images) if concrete else images
  if images.dtype == jnp.bool_ or not (jnp.issubdtype(images.dtype, jnp.floating)
                                       or jnp.issubdtype(images.dtype, jnp.integer)):
    raise _checks.ArgumentTypeError(
        f"images must have a real floating or integer dtype, got {images.dtype}")
  _checks.check_values("images", images, lambda a: (a >= 0) & (a <= 1),
                       "grey levels in [0, 1] (finite; divide 8-bit pixels by 255)")
  dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
  x = images.astype(dtype)
  u = jax.random.uniform(key, images.shape, dtype=dtype)
  out = (u < x).astype(dtype)
  if not concrete:
    out = _checks.nan_unless((x >= 0) & (x <= 1), out)
  return out


# ----------------------------------------------------------------------------------------------
# image checks


def check_images(images, *, name: str = "images", image_shape: tuple[int, ...] | None = None,
                 binary_likelihood: bool = True) -> np.ndarray:
  """Validates a training or test array before any work is done; returns it as float32.

  ``uint8`` arrays are scaled by ``1/255`` first (grey levels, as MNIST is distributed).

  Args:
    images: ``[N, H, W, C]`` (or ``[N, D]``).
    name: how the array is named in error messages (e.g. ``"mnist/train image"``).
    image_shape: the model's ``(H, W, C)``; the per-example shape (or its size, for flat
      arrays) must match.
    binary_likelihood: the model has a Bernoulli decoder, so values must lie in [0, 1].

  Returns:
    ``images`` as a float32 numpy array.

  Raises:
    ValueError: an empty split, non-finite values, values outside [0, 1] for a Bernoulli decoder,
      or an image size different from the model's.
  """
  if not isinstance(name, str):
    raise TypeError(f"name must be a str (how the array is named in messages), got "
                    f"{type(name).__name__} {name!r}")
  if not isinstance(binary_likelihood, (bool, np.bool_)):
    raise TypeError(f"binary_likelihood must be a bool, got {type(binary_likelihood).__name__} "
                    f"{binary_likelihood!r}")
  if image_shape is not None:
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, np.ndarray)) else None
    if not shape or any(isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer))
                        or s < 1 for s in shape):
      raise ValueError(f"image_shape must be a non-empty sequence of ints >= 1 (the model's "
                       f"(H, W, C)), got {image_shape!r}")
  arr = np.asarray(images)
  if arr.ndim < 2 or arr.shape[0] == 0:
    raise ValueError(f"{name} split is empty (shape {arr.shape}); nothing to train or evaluate on")
  if arr.dtype == np.uint8:
    arr = arr.astype(np.float32) / 255.0
  if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer) \
      and arr.dtype != np.bool_:
    raise ValueError(f"{name} has dtype {arr.dtype}; expected floats in [0, 1] or uint8")
  arr = arr.astype(np.float32, copy=False)
  if image_shape is not None:
    image_shape = tuple(int(s) for s in image_shape)
    size = int(np.prod(image_shape))
    if arr.shape[1:] != image_shape and arr.shape[1:] != (size,):
      raise ValueError(f"{name} has per-example shape {arr.shape[1:]}, but the model expects "
                       f"images of shape {image_shape} ({size} pixels)")
  if not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} contains non-finite values (NaN or inf)")
  if binary_likelihood:
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
      raise ValueError(f"{name} values must lie in [0, 1] for the Bernoulli decoder, got values "
                       f"in [{lo:g}, {hi:g}]")
  return arr


# ----------------------------------------------------------------------------------------------
# helpers


def _check_name(name):
  if not isinstance(name, str):
    raise TypeError(f"name must be a dataset name (a str), one of {list(DATASETS)}; got "
                    f"{type(name).__name__} {name!r}")
  if name not in SPLITS:
    raise ValueError(f"Unknown dataset name={name!r}; allowed values: {list(DATASETS)}.")


def _load_digits(split):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  d = load_digits()
  lo, hi = _DIGITS_SPLITS[split]
  image = (d.images[lo:hi] / 16.0).astype(np.float32)[..., None]
  return {"image": image, "label": d.target[lo:hi].astype(np.int32)}


def _cache_dir(cache_dir):
  path = cache_dir or os.environ.get("DGMJAX_TFDS_DIR") or os.path.join(
      "~", "tensorflow_datasets")
  return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _npz_path(name, cache):
  return os.path.join(cache, "dgmjax_npz", f"{name}-v{_NPZ_VERSION}.npz")


def _split_keys(name, split):
  src = "train" if name in ("mnist", "fashion_mnist") and split == "validation" else split
  return (f"{src}_image", f"{src}_label")


def _record_path(npz_path):
  return npz_path + ".sha256.json"


def _array_record(a) -> dict:
  a = np.ascontiguousarray(a)
  return {"sha256": hashlib.sha256(a.tobytes()).hexdigest(), "shape": list(a.shape),
          "dtype": a.dtype.str}


def _read_npz(name, cache, keys=None):
  """``(arrays, None)``: the cached arrays (only ``keys`` where given), each checked against the
  cache's checksum record; ``(None, None)`` when there is no cache; ``(None, why)`` when the
  cache is unreadable or does not match its record (it is then rebuilt)."""
  path = _npz_path(name, cache)
  if not os.path.exists(path):
    return None, None
  try:
    with open(_record_path(path)) as f:
      record = json.load(f)["arrays"]
  except FileNotFoundError:
    return None, f"its checksum record {_record_path(path)!r} is missing"
  except (OSError, ValueError, KeyError, TypeError) as e:
    return None, f"its checksum record {_record_path(path)!r} is unreadable ({e})"
  try:
    with np.load(path) as f:
      files = set(f.files)
      if files != set(record):
        missing, extra = sorted(set(record) - files), sorted(files - set(record))
        return None, (f"it holds arrays {sorted(files)}, its record lists {sorted(record)}"
                      + (f" (missing {missing})" if missing else "")
                      + (f" (not recorded {extra})" if extra else ""))
      arrays = {k: f[k] for k in f.files if keys is None or k in keys}
  except Exception as e:  # pylint: disable=broad-except
    return None, f"it cannot be read ({type(e).__name__}: {e})"
  for k, a in arrays.items():
    got = _array_record(a)
    want = record[k]
    if got != want:
      fields = [f for f in ("shape", "dtype", "sha256") if got[f] != want.get(f)]
      return None, (f"array {k!r} does not match its record: "
                    + ", ".join(f"{f} {got[f]} where {want.get(f)} was recorded" for f in fields))
  return arrays, None


def _write_npz(name, cache, arrays):
  """Writes the cache and then its checksum record (both atomically, under the caller's lock)."""
  path = _npz_path(name, cache)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp.npz"
  np.savez(tmp, **arrays)
  record = {"format": _NPZ_VERSION, "dataset": name,
            "arrays": {k: _array_record(a) for k, a in arrays.items()}}
  tmp_record = f"{_record_path(path)}.{os.getpid()}.tmp"
  with open(tmp_record, "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(tmp, path)
  os.replace(tmp_record, _record_path(path))


def _resolve_manual_dir(name, data_dir):
  """The folder holding ``name``'s files, or None when no local copy is named."""
  root = data_dir if data_dir is not None else os.environ.get("DGMJAX_DATA_DIR") or None
  if root is None:
    return None
  source = "data_dir" if data_dir is not None else "DGMJAX_DATA_DIR"
  root = os.path.abspath(os.path.expanduser(os.fspath(root)))
  files = list(_FILES[name])
  if not os.path.isdir(root):
    raise ValueError(
        f"{source}={root!r} does not exist (or is not a folder): expected a folder holding "
        f"{name}/ with {files}.")
  for candidate in (os.path.join(root, name), root):
    if os.path.isdir(candidate) and any(
        os.path.exists(os.path.join(candidate, f)) for f in files):
      return candidate
  raise ValueError(
      f"{source}={root!r} holds no copy of {name!r}: expected the files {files} either in "
      f"{os.path.join(root, name)!r} or in {root!r} itself.")


def _verify_files(name, folder):
  """Checks size and sha256 of each standard file; ValueError naming the file otherwise."""
  for fname, (size, sha) in _FILES[name].items():
    path = os.path.join(folder, fname)
    if not os.path.exists(path):
      if name == "omniglot":
        continue  # tfds says which of its zips it needs.
      raise ValueError(f"Missing file {path!r}: {name} needs {list(_FILES[name])} in {folder!r}.")
    if not sha:
      continue
    actual = os.path.getsize(path)
    if actual != size:
      raise ValueError(
          f"Corrupt or truncated file {path!r}: expected {size} bytes (sha256 {sha}), "
          f"found {actual} bytes. Replace it with the original {fname}.")
    h = hashlib.sha256()
    with open(path, "rb") as f:
      for chunk in iter(lambda: f.read(1 << 22), b""):
        h.update(chunk)
    if h.hexdigest() != sha:
      raise ValueError(
          f"Checksum mismatch for {path!r}: expected sha256 {sha}, got {h.hexdigest()}. "
          f"The file is corrupt; replace it with the original {fname}.")


def _select(name, split, arrays, source):
  """Cached uint8 arrays -> the requested split, float32 in [0, 1] (``source``: the cache file,
  named when its arrays are inconsistent)."""
  if name in ("mnist", "fashion_mnist") and split in ("train", "validation"):
    image, label = arrays["train_image"], arrays["train_label"]
    n = image.shape[0] - _N_VALIDATION
    sl = slice(0, n) if split == "train" else slice(n, None)
    image, label = image[sl], label[sl]
  else:
    image, label = arrays[f"{split}_image"], arrays.get(f"{split}_label")
  if name != "binarized_mnist" and (label is None or label.shape[:1] != image.shape[:1]):
    raise ValueError(f"{name} {split}: the cached arrays hold {image.shape[0]} images and "
                     f"{'no labels' if label is None else f'{label.shape[0]} labels'}; every "
                     f"image needs its label. Delete the cache {source!r} and load again.")
  out = {"image": image.astype(np.float32)}
  scale = _SCALE[name]
  if scale != 1.0:
    out["image"] /= np.float32(scale)  # Correctly rounded x / 255, as in the reference code.
  if label is not None:
    out["label"] = label.astype(np.int32)
  return out


# ---------------------------------------------------------------- numpy readers of local files


def _read_gz(path):
  try:
    with gzip.open(path, "rb") as f:
      return f.read()
  except (OSError, EOFError, zlib.error) as e:
    raise ValueError(f"Cannot read {path!r} as a gzip file ({e}); expected the original "
                     f"{os.path.basename(path)}.") from e


def _read_idx(path, magic, header):
  raw = _read_gz(path)
  if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
    raise ValueError(f"{path!r} is not an IDX file with magic number {magic}.")
  return np.frombuffer(raw, np.uint8, offset=header)


def _read_mnist_like(folder):
  out = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    x = _read_idx(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), 2051, 16)
    y = _read_idx(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), 2049, 8)
    out[f"{split}_image"] = x.reshape(-1, 28, 28, 1)
    out[f"{split}_label"] = y.copy()
  return out


def _read_binarized(folder):
  out = {}
  for split, suffix in (("train", "train"), ("validation", "valid"), ("test", "test")):
    path = os.path.join(folder, f"binarized_mnist_{suffix}.amat")
    raw = np.fromfile(path, np.uint8)
    if raw.size % 1568:
      raise ValueError(f"{path!r}: expected rows of 784 space-separated 0/1 digits.")
    x = raw.reshape(-1, 1568)[:, 0::2] - ord("0")
    out[f"{split}_image"] = x.reshape(-1, 28, 28, 1)
  return out


_NUMPY_READERS = {
    "mnist": _read_mnist_like,
    "fashion_mnist": _read_mnist_like,
    "binarized_mnist": _read_binarized,
}


# ------------------------------------------------------------------------ tensorflow-datasets


def _online(name) -> bool:
  host, port = _HOSTS[name]
  try:
    conn = socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S)
  except OSError:
    return False
  conn.close()
  return True


def _import_tfds():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "Loading this dataset through tensorflow-datasets needs `tensorflow-cpu` and "
        "`tensorflow-datasets` (pip install tensorflow-cpu tensorflow-datasets); for local "
        "files use backend='numpy'; 'digits' needs neither.") from e
  tfds.disable_progress_bar()
  return tfds


def _maybe_prepared(name, cache) -> bool:
  """Whether tfds may already hold a prepared copy (checked without importing tfds)."""
  root = os.path.join(cache, name)
  if not os.path.isdir(root):
    return False
  for dirpath, _, filenames in os.walk(root):
    if "dataset_info.json" in filenames:
      return True
  return False


def _load_tfds(name, cache, manual) -> dict[str, Any]:
  # Probe the network before importing TensorFlow, so that offline failure takes ~2 s.
  if manual is None and not _maybe_prepared(name, cache) and not _online(name):
    host, _ = _HOSTS[name]
    raise ConnectionError(
        f"Cannot download {name!r}: {host} is unreachable (offline?). Point at a local copy "
        f"of the standard files instead: load({name!r}, ..., data_dir='/path/to/data') or "
        f"set DGMJAX_DATA_DIR, where the folder holds {name}/ with {list(_FILES[name])}.")
  tfds = _import_tfds()
  builder = tfds.builder(name, data_dir=cache)
  if not builder.is_prepared():
    try:
      if manual is None:
        builder.download_and_prepare()
      else:
        # A fresh download folder per preparation: tfds names the extraction of a manual file
        # after its basename only, so mnist and fashion_mnist (same file names) would share one
        # extraction and fashion_mnist would silently be prepared from MNIST's pixels.
        os.makedirs(cache, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dgmjax-downloads-", dir=cache) as dl_dir:
          builder.download_and_prepare(
              download_dir=dl_dir,
              download_config=tfds.download.DownloadConfig(manual_dir=manual))
    except Exception as e:  # pylint: disable=broad-except
      if type(e).__name__ == "NonMatchingChecksumError":
        raise ValueError(f"Checksum mismatch while preparing {name!r} with tfds: {e}") from e
      raise
  out = {}
  for split in builder.info.splits:
    d = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))
    if name == "omniglot":
      out[f"{split}_image"] = np.asarray(d["image"])[..., :1]
      out[f"{split}_label"] = np.asarray(d["label"])
      continue
    # Undo tfds' record shuffle so that splits taken by position (the last 400 MNIST training
    # images) are the same as in the files.
    order = _tfds_record_order(split, len(d["image"]))
    for key in ("image", "label"):
      if key in d:
        restored = np.empty_like(np.asarray(d[key]))
        restored[order] = d[key]
        out[f"{split}_{key}"] = restored.astype(np.uint8)
  _verify_arrays(name, out)
  return out


def _tfds_record_order(split, n):
  """Keys 0..n-1 in the order tfds stores them: sorted by md5(split name + str(key)).

  The MNIST-family builders key each record by its row index; tfds writes records sorted by
  this salted hash (``tfds.core.hashing``, kept stable across tfds versions because it fixes
  dataset order). Row ``order[i]`` of the files is record ``i``.
  """
  salt = hashlib.md5(split.encode())
  digests = []
  for i in range(n):
    h = salt.copy()
    h.update(str(i).encode())
    digests.append(h.digest())  # bytes sort like tfds' int(hexdigest, 16)
  return np.array(sorted(range(n), key=digests.__getitem__), dtype=np.int64)


def _verify_arrays(name, arrays):
  """Checks the tfds arrays against the pinned digests of the files (content and order)."""
  for key, sha in _ARRAY_SHA256.get(name, {}).items():
    got = hashlib.sha256(np.ascontiguousarray(arrays[key]).tobytes()).hexdigest()
    if got != sha:
      raise RuntimeError(
          f"tensorflow-datasets returned {name} {key} that differs from the standard files "
          f"(sha256 {got}, expected {sha}): its record order or content changed. Use "
          f"backend='numpy' with data_dir=..., or delete the prepared copy in the cache.")
