import os

import pytest

os.environ.setdefault("RWKV_TUNE_NO_TUI", "1")


@pytest.fixture
def tiny_model(tmp_path):
    """Factory: write a tiny official-format model and return its path."""
    from rwkv_tune.testing import make_model

    def make(version: int = 7, **kwargs):
        name = f"v{version}-" + "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()) if k != "dtype") + ".pth"
        return make_model(tmp_path / name, version=version, **kwargs)

    return make


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny matmuls run faster so, and far faster on a busy 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
