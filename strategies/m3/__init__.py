"""Registration of `m3`: Multi-scale Momentum Muon (NL-arXiv arXiv:2512.24695 Section 7.2, Algorithm 1,
Eq 75; nlbench math spec ``/work/shared/design/nl-math.md`` Section 8.4)::

    fast (every step):  M1 <- b1 M1 + (1-b1) g ;  V <- b2 V + (1-b2) g^2          (decay='ema')
    slow (s % f == 0):  M2 <- b3 M2 + (1-b3) sum_{chunk} g ;  O2 = NS_5(M2)
    W <- W - lr (NS_5(M1) + alpha O2) / (sqrt(V) + eps)

Registration only (no torch import); the optimizer is in ``optimizer``. Embeddings, positions, the head
and parameters with ndim < 2 use the AdamW fallback (``adam_lr``), as in Muon's practice.

Defaults (measured, see the description): NS_5 output is scale-free while sqrt(V) carries the gradient's
scale, so the per-coordinate step is lr * O(1/sqrt(d)) / |g|: coordinates with tiny gradients take huge
steps. At lr 1e-2 (and even 1e-4 with eps 1e-8) the loss of the split-digits MLP ran to 1e5-1e8; eps is
therefore a floor on sqrt(V) in gradient units, eps = 1e-3 with lr = 1e-4.
"""

from __future__ import annotations

from nlbench.core.registry import HParam, Parts, register_strategy, trainable


@register_strategy(
    "m3",
    description=("M3, Multi-scale Momentum Muon (NL §7.2 Alg. 1): fast NS(M1) + alpha NS(M2) from a slow "
                 "chunk clock, divided by sqrt(V)+eps; eps 1e-3 floors sqrt(V) because the NS output is "
                 "scale-free (eps 1e-8 diverges)"),
    family="nested-learning",
    provides_optimizer=True,
    hparams=(
        HParam("lr", 1e-4, "float", "learning rate eta of the matrix parameters", low=0.0, high=10.0),
        HParam("beta1", 0.9, "float", "fast momentum M1", low=0.0, high=1.0),
        HParam("beta2", 0.999, "float", "second moment V", low=0.0, high=1.0),
        HParam("beta3", 0.9, "float", "slow momentum M2 (per slow update)", low=0.0, high=1.0),
        HParam("alpha", 1.0, "float", "weight of the slow momentum's NS output", low=0.0, high=100.0),
        HParam("eps", 1e-3, "float", "floor on sqrt(V), in gradient units", low=0.0, high=1.0),
        HParam("slow_period", 10, "int", "period f of the slow momentum, in steps", low=1, high=1_000_000),
        HParam("decay", "ema", "str", "memories as EMAs (nlbench) or plain sums (as printed)", choices=("ema", "literal")),
        HParam("adam_lr", 1e-3, "float", "AdamW fallback lr: embeddings, positions, head, vectors", low=0.0, high=10.0),
    ),
)
def build_m3(ctx, hp):
    from ..dmgd.muon import muon_param_groups
    from .optimizer import M3

    # As Muon (M3 is built on it): NS only for hidden-layer matrices; embeddings, positions, the head
    # and vectors take the AdamW fallback. With NS on the head, split-fmnist stopped learning new
    # classes after the first experience (accuracy 0.00 on experiences 2-5 at lr 1e-4).
    return Parts(
        optimizer=lambda model, params=None: M3(
            muon_param_groups(model, trainable(model, params)), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"], hp["beta3"]),
            alpha=hp["alpha"], eps=hp["eps"], slow_period=hp["slow_period"], decay=hp["decay"],
            adam_lr=hp["adam_lr"],
        )
    )
