"""Every test process sees 8 fake CPU devices, so sharding tests need no special runner.

Single-device tests build their own one-device mesh; XLA_FLAGS must be set before jax is imported.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
