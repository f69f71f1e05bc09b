"""VAE vs IWAE on MNIST-family data: Burda, Grosse & Salakhutdinov (ICLR 2016), Table 1."""
