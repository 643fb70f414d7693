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


@pytest.fixture
def offline(monkeypatch):
    """No download attempts: the machine has no network, and the tests must not depend on one."""
    monkeypatch.setenv("NLBENCH_OFFLINE", "1")
