"""ae-jax: autoencoders in JAX/Flax with a pmapped trainer and Orbax checkpoints."""

__version__ = "0.1.0"
