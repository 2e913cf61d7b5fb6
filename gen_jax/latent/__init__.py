"""Latent-variable models: Gaussian mixtures fitted by EM (:mod:`.gmm`), deterministic
autoencoders (:mod:`.autoencoder`), VAEs with beta / conditional / IWAE variants
(:mod:`.vae`), their networks (:mod:`.networks`), objectives (:mod:`.objectives`) and latent
traversals / interpolations (:mod:`.traversal`)."""
