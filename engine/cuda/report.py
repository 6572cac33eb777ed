"""Write engine/cuda/REPORT.md: registers, shared memory, stack and spills per kernel.

    python -m engine.cuda.report [--out PATH]

Every kernel of engine/cuda/*.cu is compiled by NVRTC (no GPU needed) for sm_80 and sm_90, in
float32 and float64, with the options CuPy's RawModule gets (engine.cuda.options) plus
-Xptxas=-v; ptxas' report is parsed (engine/cuda/nvrtc.py). Exit status 1 when a kernel spills.

REPORT.md has other writers: each owns a section between `<!-- NAME -->` and `<!-- /NAME -->`
(`with_section`; the GPU check's is "gpu-check", engine/bench/gpu_check.py), and a rewrite of
the resource table keeps them.
"""

import argparse
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

from . import ARCHS, CUDA_DIR, SOURCES, options
from .launch import Tiles
from .nvrtc import compile_cu, version

OUT = CUDA_DIR / "REPORT.md"


def collect(tiles=Tiles()):
    """[(file, arch, dtype, kernel, usage dict)] for every kernel, arch and dtype."""
    rows = []
    for dtype in ("float32", "float64"):
        for src in SOURCES:
            for arch in ARCHS:
                res = compile_cu(src, arch, tiles.defines(dtype))
                for name in sorted(res.kernels):
                    rows.append((src, arch, dtype, name, res.kernels[name]))
    return rows


def render(rows, tiles=Tiles()):
    major, minor = version()
    spills = [r for r in rows if r[4]["spill_stores"] or r[4]["spill_loads"]]
    lines = [
        "# CUDA kernels: resource usage",
        "",
        f"Written by `python -m engine.cuda.report` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"with NVRTC {major}.{minor} (no GPU needed), options "
        f"`{' '.join(options(tiles.defines()))} -arch=<arch> -Xptxas=-v`. Tiles: {tiles}.",
        "",
        f"**Spills: {'none' if not spills else ', '.join(f'{r[3]} ({r[1]}, {r[2]})' for r in spills)}.**",
        "",
        "| file | kernel | arch | dtype | registers | shared (bytes) | stack (bytes) | spill stores | spill loads |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for src, arch, dtype, name, u in rows:
        lines.append(f"| {src} | `{name}` | {arch} | {dtype} | {u['registers']} | {u['smem_bytes']} | "
                     f"{u['stack_bytes']} | {u['spill_stores']} | {u['spill_loads']} |")
    lines.append("")
    return "\n".join(lines), spills


SECTION = re.compile(r"<!-- ([\w-]+) -->\n(.*?)<!-- /\1 -->", re.S)


def _markers(name):
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def with_section(text, name, body):
    """`text` with its section `name` (markers included) holding `body`: replaced where it is,
    else appended; the rest of the text kept as it was."""
    start, end = _markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    i, j = text.find(start), text.find(end)
    if i >= 0 and j > i:
        return text[:i] + block + text[j + len(end):]
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block + "\n"


def sections(text):
    """{name: body} of the marked sections of `text`."""
    return {m.group(1): m.group(2) for m in SECTION.finditer(text)}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m engine.cuda.report", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    rows = collect()
    text, spills = render(rows)
    for name, body in (sections(args.out.read_text()) if args.out.exists() else {}).items():
        text = with_section(text, name, body)                          # the other writers' sections
    args.out.write_text(text)
    print(f"wrote {args.out}: {len(rows)} kernel builds, "
          f"{'no spills' if not spills else f'{len(spills)} with spills'}")
    return 1 if spills else 0


if __name__ == "__main__":
    sys.exit(main())
