"""gspo: GSPO and DAPO-style dynamic sampling for RL post-training of causal LMs."""

__version__ = "0.1.0"
