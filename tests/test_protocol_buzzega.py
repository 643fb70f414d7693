"""The `buzzega2020` preset (Seq-FMNIST protocol of Buzzega et al., ICPR 2020), its `mlp-2x256` backbone and
replay's separate memory minibatch (`mem_batch`), on real Fashion-MNIST images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nlbench.core.backbones import build_backbone
from nlbench.core.protocols import backbone_descriptor, get_protocol, protocol_overrides
from nlbench.core.spec import resolve_spec
from nlbench.errors import UserError

from datafiles import write_idx_images, write_idx_labels

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_preset_pins_the_authors_seq_fmnist_settings():
    p = get_protocol("buzzega2020")
    assert (p.suite, p.scenarios, p.backbone, p.epochs, p.batch_size, p.buffer_sizes) == (
        "split-fmnist", ("class",), "mlp-2x256", 1, 10, (200, 500, 1000))
    assert any("NO PUBLISHED NUMBER" in note for note in p.notes)  # the report prints the notes of a preset it ran
    assert protocol_overrides("buzzega2020", "split-fmnist", "sgd")["hparams"] == {"lr": 0.2, "momentum": 0.0, "weight_decay": 0.0}
    # ER's best learning rate depends on the buffer in utils/best_args.py: 0.03 for 200, 0.1 for 500 and 1000.
    for buffer, lr in ((200, 0.03), (500, 0.1), (1000, 0.1)):
        hp = protocol_overrides("buzzega2020", "split-fmnist", "replay", buffer_size=buffer)["hparams"]
        assert hp == {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": lr, "mem_size": buffer, "mem_batch": 128}
    for buffer in (200, 500, 1000):
        hp = protocol_overrides("buzzega2020", "split-fmnist", "agem", buffer_size=buffer)["hparams"]
        assert (hp["lr"], hp["patterns_per_exp"], hp["sample_size"]) == (0.03, buffer // 5, 128)
    with pytest.raises(UserError, match="buffer sizes 200, 500, 1000, not 300"):
        protocol_overrides("buzzega2020", "split-fmnist", "replay", buffer_size=300)
    with pytest.raises(UserError, match="defined for suite split-fmnist"):
        protocol_overrides("buzzega2020", "split-mnist", "sgd")


def test_the_report_says_no_published_number_is_beside_the_runs():
    from nlbench.commands.report.published import load_published, no_published_number_lines

    lines = no_published_number_lines(["buzzega2020", "der2020", "buzzega2020"])
    assert len(lines) == 1 and "`buzzega2020`" in lines[0] and "could not be read" in lines[0]
    published = load_published()
    assert not ((published["suite"] == "split-fmnist") & (published["protocol"] == "buzzega2020")).any()  # no faked row


def test_a_run_spec_under_the_preset():
    spec = resolve_spec("split-fmnist", "replay", device="cpu", protocol="buzzega2020", hparams={"mem_size": 500})
    assert (spec.scenario, spec.backbone, spec.epochs, spec.batch_size, spec.protocol) == ("class", "mlp-2x256", 1, 10, "buzzega2020")
    assert spec.hp == {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "lr": 0.1, "mem_size": 500, "mem_batch": 128}
    assert backbone_descriptor("split-fmnist", spec.backbone) == "mlp-2x256"
    with pytest.raises(UserError, match="--batch-size 32 contradicts protocol 'buzzega2020', which pins 10"):
        resolve_spec("split-fmnist", "sgd", device="cpu", protocol="buzzega2020", batch_size=32)


def test_mem_batch_at_its_default_keeps_stored_run_ids():
    # Ids computed with the code before mem_batch existed (main at 28e9753).
    assert resolve_spec("split-fmnist", "replay", device="cpu").run_id == "2d8c660bceede89c"
    assert resolve_spec("split-digits", "replay", device="cpu", hparams={"mem_size": 500}).run_id == "922d8cec7dff2d43"
    assert resolve_spec("split-digits", "ewc+replay", device="cpu", hparams={"mem_size": 500}).run_id == "e471333e6ad9fe5f"
    default = resolve_spec("split-digits", "replay", device="cpu", hparams={"mem_batch": 0})
    assert "mem_batch" not in default.hp  # nor, then, in the report's columns
    sized = resolve_spec("split-digits", "replay", device="cpu", hparams={"mem_batch": 128})
    assert sized.hp["mem_batch"] == 128 and sized.run_id != default.run_id


def test_mlp_2x256_layers_init_and_raw_pixel_input():
    torch.manual_seed(0)
    model = build_backbone("mlp-2x256", (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 256), (256, 10)]
    assert model.classifier is linears[-1]
    assert sum(p.numel() for p in model.parameters()) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    for m in linears:  # Mammoth's xavier(): U(-a, a), a = sqrt(6 / (fan_in + fan_out)), zero biases
        bound = math.sqrt(6.0 / (m.in_features + m.out_features))
        assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.9 * bound
        assert torch.count_nonzero(m.bias) == 0
    # nlbench standardises Fashion-MNIST; this backbone sees the [0, 1] pixels Mammoth feeds its MLP.
    pixels = torch.rand(4, 1, 28, 28)
    standardised = (pixels - 0.2860) / 0.3530
    plain = torch.nn.Sequential(torch.nn.Flatten(), model.features, model.classifier)
    torch.testing.assert_close(model(standardised), plain(pixels), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match="unknown option"):
        build_backbone("mlp-2x256", (1, 28, 28), 10, hidden=(100, 100))  # the size is the name


def test_memory_minibatch_has_mem_batch_samples_without_repeats():
    from nlbench.data.fastpath import TensorBatches
    from nlbench.baselines.replay.plugins import SizedReplayBatches

    current = TensorBatches((torch.arange(50.0)[:, None], torch.zeros(50, dtype=torch.long), torch.zeros(50, dtype=torch.long)),
                            batch_size=10, shuffle=False)
    for size, expected in ((300, 128), (40, 40)):  # a memory smaller than mem_batch gives all of it
        memory = (1000 + torch.arange(float(size))[:, None], torch.ones(size, dtype=torch.long), torch.zeros(size, dtype=torch.long))
        batches = list(SizedReplayBatches(current, memory, 128))
        assert len(batches) == 5
        for x, y, _ in batches:
            assert len(x) == 10 + expected and int((y == 1).sum()) == expected
            replayed = x[10:, 0]
            assert len(set(replayed.tolist())) == expected and bool((replayed >= 1000).all())


def _fmnist_subset(root: Path, per_class_train: int, per_class_test: int) -> None:
    """The first images of each class of Debian's real Fashion-MNIST, written where torchvision reads them."""
    from nlbench.data.readers import load_arrays

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for train, prefix, per_class in ((True, "train", per_class_train), (False, "t10k", per_class_test)):
        x, y = load_arrays("fashion-mnist", root / "full", train=train, download=False)
        keep = np.concatenate([np.flatnonzero(y.numpy() == c)[:per_class] for c in range(10)])
        keep.sort()
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", x.numpy()[keep])
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", y.numpy()[keep])


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason=f"{DEBIAN_FMNIST} is absent (apt-get install dataset-fashion-mnist)")
def test_preset_runs_on_real_fashion_mnist_and_replay_beats_fine_tuning(tmp_path, offline, one_thread):
    from nlbench.core.runner import run_one
    from nlbench.data.streams import build_benchmark
    from nlbench.data.suites import get_suite

    (tmp_path / "full").mkdir()
    _fmnist_subset(tmp_path, per_class_train=300, per_class_test=100)
    benchmark = build_benchmark(get_suite("split-fmnist"), "class", seed=0, data_root=tmp_path, download=False)
    acc = {}
    for strategy in ("sgd", "replay"):
        spec = resolve_spec("split-fmnist", strategy, device="cpu", protocol="buzzega2020")
        result = run_one(spec, benchmark=benchmark)
        assert result["status"] == "completed", result["error"]
        matrix = np.array(result["accuracy_matrix"])
        assert matrix.shape == (5, 5)
        acc[strategy] = matrix[-1].mean()
    # Class-IL fine-tuning keeps only the last task (ACC ~ 0.2); a 200-sample buffer replayed 128 at a time keeps more.
    assert acc["sgd"] < 0.3 and acc["replay"] > acc["sgd"] + 0.15, acc
