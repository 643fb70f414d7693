"""In-context regime variants of `bigram-shift` (nl-math.md 5.2, option `in_context_regime`).

The blocked default (experience 1 = regime A, experience 2 = regime B) can be solved by the fast
embedding/head path alone: every method then ends equal to the lookup-table oracle of the last regime.
In these variants each training sequence is drawn from A or B at random, so which regime generated a
sequence must be inferred from its context (through attention):

- `mixture`: experience 1 draws A with probability `mix` (0.9), experience 2 with 1 - mix (90/10 -> 10/90);
- `alternating`: `blocks` experiences alternating A-majority and B-majority mixtures (A, B, A, B, ...);
- `reexposure`: A-majority, B-majority, A-majority again (A -> B -> A); with `--eval-every`, the report
  compares how fast accuracy on A comes back in the third experience with how fast it was first learned
  (relearning speed, `nlbench.core.continual_eval.relearning`).

`mix` = 1.0 gives pure regimes. Test experience i is PURE: its majority regime's held-out sequences, the
same tensors for every experience of that regime, so column i of the accuracy matrix is "what the
model knows about regime r(i), given the context of a sequence of r(i)".

The generator primitives (regime permutations, the sequence sampler, the data seed) are those of
`nlbench.data.bigram`, which passes them in (this module does not import it: no import cycle).

Sizes: `steps` optimizer steps per experience at the suite's batch size and epochs (default 640 =
10 x the slowest default clock period 64), i.e. n_train = steps * batch / epochs sequences per
experience (20480 at batch 64, 2 epochs); 512 test sequences per regime. Every tensor comes from one
generator seeded with DATA_SEED + 1 (the stream is seed-fixed, like the blocked default).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

REGIMES = ("blocked", "mixture", "alternating", "reexposure")
DEFAULT_STEPS = 640  # 10 x the slowest default clock period (64) of cms, clocked-adam and hope


def majority_regimes(regime: str, blocks: int = 6) -> list[int]:
    """Majority regime (0 = A, 1 = B) of each experience."""
    if regime in ("blocked", "mixture"):
        return [0, 1]
    if regime == "reexposure":
        return [0, 1, 0]
    if regime == "alternating":
        return [i % 2 for i in range(blocks)]
    raise ValueError(f"unknown regime {regime!r}; valid: {', '.join(REGIMES)}")


def mixed_sequences(perms: Tensor, share_a: float, n: int, length: int, eps: float,
                    generator: torch.Generator, sample_sequences: Callable) -> tuple[Tensor, Tensor, Tensor]:
    """n sequences, each from regime A with probability `share_a`, else B; returns (x, y, regime)."""
    regime = (torch.rand(n, generator=generator) >= share_a).long()
    xa, ya = sample_sequences(perms[0], n, length, eps, generator)
    xb, yb = sample_sequences(perms[1], n, length, eps, generator)
    pick = regime.bool().unsqueeze(1)
    return torch.where(pick, xb, xa), torch.where(pick, yb, ya), regime


def make_regime_stream(options: dict[str, Any], vocab_size: int, seq_len: int, batch_size: int, epochs: int,
                       *, data_seed: int, regime_permutations: Callable, sample_sequences: Callable) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]], list[tuple[Tensor, Tensor, Tensor]]]:
    """(perms, train experiences, test experiences) of an in-context variant; each experience is (x, y, regime)."""
    regime = options.get("regime", "mixture")
    mix = float(options.get("mix", 0.9))
    majority = majority_regimes(regime, int(options.get("blocks", 6)))
    steps = int(options.get("steps", 0)) or DEFAULT_STEPS
    n_train = steps * batch_size // epochs
    n_test = int(options.get("n_test", 512))
    eps = float(options.get("eps", 0.1))
    generator = torch.Generator().manual_seed(data_seed + 1)
    perms = regime_permutations(vocab_size, float(options.get("overlap", 0.0)), generator)
    train = [mixed_sequences(perms, mix if r == 0 else 1.0 - mix, n_train, seq_len, eps, generator, sample_sequences)
             for r in majority]
    pure = []
    for r in (0, 1):
        x, y = sample_sequences(perms[r], n_test, seq_len, eps, generator)
        pure.append((x, y, torch.full((n_test,), r, dtype=torch.long)))
    return perms, train, [pure[r] for r in majority]
