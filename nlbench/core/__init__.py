"""The core: one run from spec to stored result.

`spec` (RunSpec, run_id), `registry` (strategies by name, HParams, composition with '+'), `backbones`
(catalogue by name), `device`, `protocols` (published presets, data in `presets/`), `runner` (one spec ->
one result dict), `store` (atomic files, claims, load -> DataFrame), `metrics` (accuracy matrix ->
numbers). Validation (`spec`, `registry`, `backbones`, `protocols`, `device`) imports no torch.
"""
