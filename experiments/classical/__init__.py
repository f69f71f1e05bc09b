"""Classical latent-variable models: GMM and PPCA with EM, the linear VAE, and inference gaps."""
