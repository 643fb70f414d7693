"""Data: `suites` (metadata by name; no torch), `streams` (a suite as Avalanche train/test streams),
`readers` (torchvision file formats, the offline rules, Debian's Fashion-MNIST), `bigram` (the synthetic
two-regime stream) and `fastpath` (device tensors, index-permutation batches, batched augmentation)."""
