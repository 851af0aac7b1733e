"""Models: loading a local HF checkpoint (loading.py) and reading a model folder on disk (folder.py)."""
