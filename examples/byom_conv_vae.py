"""Bring your own model: a Flax conv VAE on binarized MNIST, trained with IWAE and DReG.

  DGMJAX_DATA_DIR=../shared/data python examples/byom_conv_vae.py [--steps 1000] [--workdir /tmp/byom]
  (--steps 300 --eval_images 100: about 35 minutes on 2 CPU cores)
"""
import argparse, os

import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np, optax

from dgmjax import data, diagnostics, evaluation, losses, models, training


class Encoder(nn.Module):  # x [B, 28, 28, 1] -> (loc, log_scale) of q(z|x), [B, 16] each
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
    h = nn.relu(nn.Conv(64, (3, 3), strides=2)(h)).reshape(x.shape[0], -1)
    return nn.Dense(16)(h), nn.Dense(16)(h)


class Decoder(nn.Module):  # z [B, 16] -> Bernoulli logits [B, 28, 28, 1]
  @nn.compact
  def __call__(self, z):
    h = nn.relu(nn.Dense(7 * 7 * 64)(z)).reshape(z.shape[0], 7, 7, 64)
    h = nn.relu(nn.ConvTranspose(32, (3, 3), strides=(2, 2))(h))
    return nn.ConvTranspose(1, (3, 3), strides=(2, 2))(h)


p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=1000)
p.add_argument("--eval_images", type=int, default=500)
p.add_argument("--workdir", default="/tmp/byom")
args = p.parse_args()
train = data.load("binarized_mnist", "train", backend="numpy")["image"]
test = data.load("binarized_mnist", "test", backend="numpy")["image"][:args.eval_images]
model = models.from_networks(Encoder(), Decoder(), likelihood="bernoulli")
init = model.init(jax.random.key(0), train[:2])
models.check_model(model, init, train[:4])                 # shapes checked once, up front
for estimator in ("iwae", "dreg"):
  workdir = os.path.join(args.workdir, estimator)
  training.fit(losses.make_loss(model, estimator, 5), init, train, optimizer=optax.adam(1e-3),
               num_steps=args.steps, batch_size=64, seed=0, workdir=workdir, resume=True,
               checkpoint_every=500, log_every=100)
  params, _, step = training.restore(workdir, like=init)    # params only: no loss, no optimizer
  nll = -evaluation.log_likelihood(model, params, test, jax.random.key(1), num_samples=5000)
  print(f"{estimator}: step {step}, test NLL (k=5000, {len(test)} images) "
        f"{nll.mean():.2f} +- {nll.std(ddof=1) / np.sqrt(len(nll)):.2f} nats")
  for k in (1, 10, 100):                                    # Rainforth et al.'s encoder SNR
    snr = diagnostics.estimator_snr(model, params, test[:4], estimator, k, jax.random.key(2), 100,
                                    chunk_size=25)
    print(f"  K={k:3d}: encoder SNR {float(snr.groups['encoder'].rms_snr):.3f}, "
          f"decoder SNR {float(snr.groups['decoder'].rms_snr):.3f}")
