"""Shared fixtures. Tests use real components: Avalanche strategies, torchvision readers, real data."""

from __future__ import annotations

import os

import pytest
import torch

# Two cores: keep torch from oversubscribing them when pytest and data loading share the machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models train faster on one intra-op thread than on two that mostly wait for each other,
    by ~10x on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits():
    """split-digits, class-incremental. Its stream does not depend on the seed (not permuted), so one
    benchmark serves every test and every seed."""
    from nlbench.data.readers import DEFAULT_DATA_ROOT
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    return build_benchmark(get_suite("split-digits"), "class", seed=0, data_root=DEFAULT_DATA_ROOT)


@pytest.fixture
def offline(monkeypatch):
    """No download attempts: the machine has no network, and the tests must not depend on one."""
    monkeypatch.setenv("NLBENCH_OFFLINE", "1")
