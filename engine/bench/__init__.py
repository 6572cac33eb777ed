"""The drivers: programs that use the layer core to measure it. Nothing in the core imports them.

    heads.py       `python -m engine bench`: the heads against nn.Linear and torch.sparse, validated,
                   timed, against their floors, their memory measured; from providers.py (the four
                   layers), validation.py, timing.py, roofline.py (floors), probe.py (peak memory in
                   a fresh process) and report.py (tables, report.json, report.html)
    scaling.py     `python -m engine bench-distributed`: label-sharded training on 1, 2, 4 processes
    results.py     `python -m engine results`: the results table, every method on a dataset
    peers.py       `python -m engine peers`: PECOS, Omikuji and napkinXC with their defaults, the same metrics
    gpu.py         `python -m engine.bench.gpu`: the CUDA kernels validated, then timed with CUDA events
"""
