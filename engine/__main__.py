"""Command line: the same work as the app, for scripts.

    python -m engine generate --preset sample --out sample_data
    python -m engine train --data ../shared/datasets/delicious --head group_shared --fanin 64
    python -m engine train --resume runs/20261125-171500-group_shared   # after a crash: continue
    python -m engine eval --run runs/20261125-171500-group_shared
    python -m engine bench
    python -m engine lss --labels 100000
    python -m engine results --data ../shared/datasets/delicious ../shared/datasets/bibtex
    python -m engine peers --data ../shared/datasets/bibtex   # PECOS, Omikuji, napkinXC: pip install '.[peers]'
    python -m engine fetch bibtex                  # then: train --data bibtex; fetch --list: all of them
    python -m engine export --run runs/20261125-171500-group_shared --to bundle --tensorboard tb
    python -m engine eval --run bundle             # an exported run, from any folder, on any machine
    python -m engine app                           # the Streamlit app (python -m app), on the runs here
    torchrun --nproc_per_node=2 -m engine train --data sample --head group_shared --distributed
    python -m engine bench-distributed --procs 1 2 4 --labels 100000

Installed (pip install .), the same commands are `xmc-lab generate ...`, `xmc-lab train ...`, ....
Bad input ends with a one-line message on stderr and exit code 2.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from .errors import XMCError


def generator_fields():
    """The GeneratorConfig fields that are `generate` flags, with their defaults (the name is the
    preset's or --out's); `train` takes its flags from TrainConfig."""
    from .data import GeneratorConfig
    return [f for f in dataclasses.fields(GeneratorConfig) if f.name != "name"]


def cmd_generate(args):
    from .data import GENERATOR_PRESETS, generate, save_dataset
    params = dict(GENERATOR_PRESETS.get(args.preset, {}))
    params.update({f.name: getattr(args, f.name) for f in generator_fields() if getattr(args, f.name) is not None})
    params.setdefault("name", Path(args.out).name)
    ds = generate(**params)
    save_dataset(ds, args.out)
    s = ds.summary()
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in s.items()))


def format_scores(record):
    keys = [k for k in record if "@" in k]
    return "  ".join(f"{k} {100 * record[k]:.2f}" for k in keys)


def train_settings(args):
    """The TrainConfig fields given on the command line (over the --preset's, if one is named)."""
    from .config import PRESETS, SETTINGS
    given = {k: v for k, v in vars(args).items() if k in SETTINGS and v is not None}
    return {**PRESETS.get(args.preset, {}), **given}


def resumed_trainer(args):
    """(trainer, run) continuing args.resume from its last checkpoint (trainer None when complete);
    with --distributed, this rank's trainer, and the run on rank 0 only (None elsewhere). A run
    resumes on any number of processes: its checkpoint is the one one process would write."""
    from .runs import Run
    from .train import Trainer
    settings = train_settings(args)
    device = settings.pop("device", None)             # where it goes on may differ from where it began
    given = sorted(set(settings) | ({"preset"} if args.preset else set()))
    if given:
        raise XMCError(f"--resume continues a run with its own config (only --device may change); drop "
                       f"{', '.join('--' + k.replace('_', '-') for k in given)}")
    run = Run(args.resume)
    config = run.config if device is None else dataclasses.replace(run.config, device=device)
    lead = True
    if args.distributed:
        from .distributed import DistributedTrainer, init_process_group
        lead = init_process_group(config)[0] == 0
        trainer = DistributedTrainer(config)
    else:
        trainer = Trainer(config)
    step = run.resume(trainer, rewrite_records=lead)
    if trainer.finished:
        if lead:
            print(f"run {run.id} is complete ({step} of {trainer.total_steps} steps): nothing to resume")
        if args.distributed:
            from .distributed import leave_process_group
            leave_process_group()
        return None, run
    if lead:
        print(f"resuming run {run.id} at step {step} of {trainer.total_steps}")
    return trainer, run if lead else None


def new_trainer(args):
    """(trainer, run) of a new run; with --distributed, this rank's trainer, and the run on rank 0
    only (None elsewhere)."""
    from .runs import RunStore
    from .config import TrainConfig
    from .train import Trainer
    config = TrainConfig.of(**train_settings(args))
    if not args.distributed:
        return Trainer(config), RunStore(args.runs).create(config)
    from .distributed import DistributedTrainer, init_process_group
    rank, _ = init_process_group(config)
    trainer = DistributedTrainer(config)
    return trainer, RunStore(args.runs).create(config) if rank == 0 else None


def cmd_train(args):
    from .memory import head_memory
    trainer, run = resumed_trainer(args) if args.resume else new_trainer(args)
    if trainer is None:
        return
    lead = run is not None                       # the one process, or rank 0: writes and prints
    ds, config = trainer.dataset, trainer.config
    mem = head_memory(trainer.model.config, config.batch_size)
    if lead:
        print(f"run {run.id}: {ds.name} ({ds.n_train} train, {ds.n_test} test, {ds.n_features} features, "
              f"{ds.n_labels} labels), head {config.model.head.name}: {trainer.model.head_params():,} parameters"
              f"{' on this rank' if args.distributed else ''}, {mem['total'] / 2**20:.1f} MB in training "
              f"(gradients, Adam state, logits or the fused loss's buffers){' (the whole head)' if args.distributed else ''}; "
              f"trains on {trainer.device} ({trainer.placement.why})", flush=True)
    t0, first, last_eval = time.perf_counter(), trainer.step, None
    with tqdm(total=trainer.total_steps, initial=first, unit="step", dynamic_ncols=True, disable=not lead) as bar:
        for record in trainer.recorded(run):
            if record["kind"] == "step":
                bar.update(1)
                bar.set_postfix(epoch=record["epoch"], loss=f"{record['loss']:.3f}",
                                **({"P@1": f"{100 * last_eval['P@1']:.2f}"} if last_eval else {}))
            elif record["kind"] == "eval":
                last_eval = record
    elapsed = time.perf_counter() - t0
    ranks = None
    if args.distributed:
        from .distributed import leave_process_group
        ranks = trainer.rank_report()
        leave_process_group()
    if not lead:
        return
    epochs = max(1e-9, (trainer.step - first) / trainer.steps_per_epoch)
    print(f"done in {elapsed:.1f} s ({elapsed / epochs:.2f} s/epoch), run stored in {run.path}")
    if last_eval is not None:
        print("test: " + format_scores(last_eval))
        if "best_step" in last_eval:
            early = f" (stopped early: no better one in {config.patience} evaluations)" if trainer.patience_spent else ""
            print(f"the weights of step {last_eval['best_step']}, the best validation nDCG@5{early}")
    if ranks:
        run.save_ranks(ranks)
        for r in ranks:
            print(f"rank {r['rank']}: {r['slots'] or r['mach_reps']} {'slots' if r['slots'] else 'MACH repetitions'}, "
                  f"{r['head_params']:,} head parameters, RSS {r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f} MB)")


def cmd_eval(args):
    from .errors import RunNotFoundError
    from .export import open_run
    from .train import Trainer
    run = open_run(args.run)
    if not (run.path / "model.safetensors").exists():
        raise RunNotFoundError(f"{run.path}: no checkpoint (model.safetensors) found")
    config = run.config.here()                                # evaluated where this machine can
    if args.data:
        config = dataclasses.replace(config, data=args.data)   # a TrainConfig's own field
    trainer = Trainer(config)
    run.load_checkpoint(trainer.model)
    print(f"{run.id} on {trainer.dataset.name} test: " + format_scores(trainer.evaluate()))


def cmd_bench(args):
    from .bench.heads import run_bench
    from .bench.providers import PROVIDERS
    from .bench.report import format_report, write_report
    providers = [p for p in PROVIDERS if p in args.providers]
    report = run_bench(label_counts=args.labels, batch=args.batch, in_features=args.in_features,
                       fanin=args.fanin, group_size=args.group_size, repeats=args.repeats,
                       providers=providers, memory=not args.no_memory,
                       mem_limit=None if args.mem_limit_gb is None else args.mem_limit_gb * 2 ** 30,
                       labels_per_row=args.labels_per_row, seed=args.seed, budget_s=args.budget_s)
    report["command"] = "python -m engine " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "python -m engine bench"
    json_path, html_path = write_report(report, args.out)
    print(format_report(report))
    print(f"wrote {json_path} and {html_path}")


def parse_bool(text):
    if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("1", "true", "yes")


def cmd_results(args):
    from .bench.results import CONFIGS, format_results, run_results
    unknown = sorted(set(args.only or ()) - set(CONFIGS))
    if unknown:
        raise XMCError(f"unknown configuration(s) {unknown}; choose from {sorted(CONFIGS)}")
    rows = run_results(args.data, names=args.only, epochs=args.epochs, seed=args.seed)
    table = format_results(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")


def cmd_peers(args):
    from .bench.peers import format_peers, run_peers, write_peer_results
    rows = run_peers(args.data, names=args.only, threads=args.threads, seed=args.seed,
                     log=lambda line: print(line, file=sys.stderr, flush=True))
    table = format_peers(rows)
    print(table)
    command = " ".join(["python -m engine peers --data", *args.data, *(["--only", *args.only] if args.only else []),
                        f"--threads {args.threads}"])
    write_peer_results(rows, args.out, command, args.threads)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.md')}")


def cmd_lss(args):
    from .lss import run_lss_experiment
    out = run_lss_experiment(n_labels=args.labels, n_points=args.points, n_features=args.features,
                             n_clusters=args.clusters, n_tables=args.tables, n_bits=args.bits,
                             fit_epochs=args.fit_epochs, seed=args.seed, verbose=True)
    print(f"{'index':10} {'candidates':>18} {'recall':>8} {'P@1':>7} {'of exact':>9} {'search s':>9} {'exact s':>8}")
    for name in ("simhash", "learned"):
        r = out[name]
        print(f"{name:10} {r['cand_mean']:>10,.0f} ({r['cand_pct']:.2f}%) {100 * r['recall']:>7.1f}% "
              f"{100 * r['P@1']:>7.2f} {100 * r['P@1_ratio']:>8.1f}% {r['search_s']:>9.2f} {r['exact_s']:>8.2f}")
    print("bar (candidates <= 10%, P@1 >= 95% of exact, faster than exact):", out["bar"])


def cmd_bench_distributed(args):
    from .bench.scaling import format_scaling, run_scaling
    report = run_scaling(procs=args.procs, heads=args.heads, n_labels=args.labels, batch_size=args.batch,
                         seed=args.seed)
    table = format_scaling(report)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(table + "\n")
    print(f"wrote {out} and {out.with_suffix('.md')}")


def cmd_fetch(args):
    from .data.fetch import fetch, format_sources
    if args.list == (args.name is not None):
        raise UsageError("fetch takes a dataset NAME or --list (see python -m engine fetch --help)")
    if args.list:
        print(format_sources())
    else:
        print(fetch(args.name, force=args.force, log=lambda line: print(line, file=sys.stderr)))


def cmd_export(args):
    from .export import export_run, export_tensorboard
    if args.to is None and args.tensorboard is None:
        raise UsageError("export writes a bundle (--to DIR), TensorBoard curves (--tensorboard DIR) or both")
    if args.to is not None:
        print(f"wrote the bundle {export_run(args.run, args.to)}")
    if args.tensorboard is not None:
        print(f"wrote TensorBoard events to {export_tensorboard(args.run, args.tensorboard)}")


def launch_app(args):
    """Replace this process by the app's launcher (python -m app) with `args` for `streamlit run`;
    its runs are those of ./runs, where `train` writes them, unless $XMC_RUNS_DIR says otherwise."""
    env = {**os.environ, "XMC_RUNS_DIR": os.environ.get("XMC_RUNS_DIR") or os.path.abspath("runs")}
    return os.execve(sys.executable, [sys.executable, "-m", "app", *args], env)


def _writable_ancestor(path):
    """The nearest existing folder of `path` or above, if it is a folder this process may write into."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
    return False


def output_dir(value):
    """An argparse type: a folder that is there, or can be made, and written to (checked before any work)."""
    path = Path(value)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is not a directory")
    if not _writable_ancestor(path):
        raise argparse.ArgumentTypeError(f"{value}: cannot be made or written to")
    return value


def output_file(value):
    """An argparse type: a file path whose folder is there, or can be made, and written to."""
    path = Path(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a directory, expected a file name")
    if not _writable_ancestor(path.parent):
        raise argparse.ArgumentTypeError(f"{value}: its folder cannot be made or written to")
    return value


class UsageError(XMCError):
    """A command line argparse rejects; main() prints it as one line, like every other XMCError."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{' '.join(message.split())} (see {self.prog} --help)")


def add_setting(parser, f):
    """The flag of a setting (engine.config.SETTINGS, or a dataclass field), from its declaration:
    type, choices, help, default."""
    m = f.metadata
    kind = {bool: parse_bool, int: int, float: float, str: str}[f.type]
    parser.add_argument("--" + f.name.replace("_", "-"), type=kind, choices=m["choices"],
                        help=f"{m['help']}{'; ' + m['zero'] if m['zero'] else ''} (default {f.default})")


def build_parser(prog="python -m engine"):
    p = Parser(prog=prog, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("app", help="start the Streamlit app (python -m app: this machine only, the safe "
                                   "server options) on the runs in ./runs ($XMC_RUNS_DIR)")
    a.add_argument("streamlit_args", nargs=argparse.REMAINDER, metavar="...",
                   help="flags for streamlit run, e.g. --server.port 8502")

    g = sub.add_parser("generate", help="write a synthetic dataset in the XC format")
    g.add_argument("--out", required=True, type=output_dir, help="output directory")
    from .data import GENERATOR_PRESETS
    g.add_argument("--preset", choices=list(GENERATOR_PRESETS),
                   help="named overrides of the defaults; sample: the bundled sample_data/")
    for f in generator_fields():
        add_setting(g, f)

    t = sub.add_parser("train", help="train a model; records go to the run store")
    t.add_argument("--runs", default="runs", type=output_dir, help="run store directory")
    t.add_argument("--resume", metavar="RUN", help="continue runs/<id> from its last checkpoint, with its own config")
    t.add_argument("--distributed", action="store_true",
                   help="label-sharded over the processes of torchrun: torchrun --nproc_per_node=N -m engine train ...")
    from .config import PRESETS, SETTINGS
    t.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                   help="start from a named recipe, the flags given override it: " + "; ".join(
                       f"{n!r}: {', '.join(f'{k}={v}' for k, v in p.items()) or 'the defaults'}" for n, p in PRESETS.items()))
    for s in SETTINGS.values():
        add_setting(t, s)

    e = sub.add_parser("eval", help="evaluate a stored run's checkpoint on the test split")
    e.add_argument("--run", required=True, help="run directory, e.g. runs/<id>")
    e.add_argument("--data", help="dataset directory (default: the run's own)")

    x = sub.add_parser("export", help="a run as a self-contained bundle (config, records, checkpoint, label "
                                      "names, checksums) and/or its curves as TensorBoard events")
    x.add_argument("--run", required=True, help="run directory, e.g. runs/<id>")
    x.add_argument("--to", metavar="DIR", type=output_dir, help="the bundle's folder: new, or empty (never overwritten)")
    x.add_argument("--tensorboard", metavar="DIR", type=output_dir, help="write the records as TensorBoard scalars to DIR/<run id>")

    b = sub.add_parser("bench", help="time and measure the heads against nn.Linear and torch.sparse")
    from .bench.heads import LABEL_COUNTS
    from .bench.providers import PROVIDERS
    b.add_argument("--labels", type=int, nargs="+", default=list(LABEL_COUNTS),
                   help=f"label counts L (default {' '.join(map(str, LABEL_COUNTS))})")
    b.add_argument("--batch", type=int, default=256)
    b.add_argument("--in-features", type=int, default=512)
    b.add_argument("--fanin", type=int, default=32)
    b.add_argument("--group-size", type=int, default=32)
    b.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (after one warm-up)")
    b.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS), metavar="P",
                   help=f"some of: {', '.join(repr(p) for p in PROVIDERS)}")
    b.add_argument("--budget-s", type=float, default=10.0,
                   help="stop repeating a measurement once its timed runs add up to this (at least one run)")
    b.add_argument("--labels-per-row", type=float, default=5.0, help="positives per row of the label batch")
    b.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    b.add_argument("--mem-limit-gb", type=float,
                   help="run a provider only if its analytic step memory fits (default: half of MemAvailable)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="bench/report.json", type=output_file, help="report JSON path; the HTML goes beside it")
    h = sub.add_parser("lss", help="learned-hash inference vs SimHash vs exact scoring on a synthetic set")
    h.add_argument("--labels", type=int, default=100_000)
    h.add_argument("--points", type=int, default=60_000)
    h.add_argument("--features", type=int, default=5_000)
    h.add_argument("--clusters", type=int, default=500)
    h.add_argument("--tables", type=int, default=16)
    h.add_argument("--bits", type=int, default=8)
    h.add_argument("--fit-epochs", type=int, default=3)
    h.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("bench-distributed", help="label-sharded training on 1, 2, 4 processes: steps/s, memory per rank")
    from .bench.scaling import HEADS as SCALING_HEADS
    s.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4], help="process counts (default 1 2 4)")
    s.add_argument("--heads", nargs="+", choices=list(SCALING_HEADS), default=list(SCALING_HEADS), metavar="H",
                   help=f"some of: {', '.join(SCALING_HEADS)}")
    s.add_argument("--labels", type=int, default=100_000)
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="bench/distributed.json", type=output_file, help="report JSON path; the markdown table goes beside it")

    f = sub.add_parser("fetch", help="download a public dataset (MULAN, XC Repository), check its SHA-256, "
                                     "cache it in the XC layout ($XMC_DATA_HOME, else ~/.cache/xmc-lab)")
    f.add_argument("name", nargs="?", help="the dataset, e.g. bibtex (see --list); prints its cache folder")
    f.add_argument("--list", action="store_true", help="the datasets: sizes, sources, checksums and their kind")
    f.add_argument("--force", action="store_true", help="download and convert again, even if cached")

    r = sub.add_parser("results", help="train every method on datasets; print the results table")
    r.add_argument("--data", nargs="+", required=True, help="dataset directories")
    r.add_argument("--only", nargs="+", help="configuration names (default: all)")
    r.add_argument("--epochs", type=int, default=30)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", type=output_file, help="also write the markdown table here")

    pe = sub.add_parser("peers", help="train PECOS XR-Linear, Omikuji and napkinXC PLT with their defaults; "
                                      "print their results table")
    from .bench.peers import PEER_RESULTS_FILE, PEERS
    pe.add_argument("--data", nargs="+", required=True, help="dataset directories")
    pe.add_argument("--only", nargs="+", choices=list(PEERS), metavar="NAME", help=f"some of: {', '.join(PEERS)}")
    pe.add_argument("--threads", type=int, default=1, help="threads each peer trains and predicts with")
    pe.add_argument("--seed", type=int, default=0, help="the seed of a peer that takes one")
    pe.add_argument("--out", default=PEER_RESULTS_FILE, type=output_file,
                    help="results JSON (the app's Compare page reads it); the markdown table goes beside it")
    return p


def main(argv=None, prog="python -m engine"):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"] and argv[1:] not in (["-h"], ["--help"]):
        return launch_app(argv[1:])               # execve: returns only where a test stands in for it
    try:
        args = build_parser(prog).parse_args(argv)
        commands = {"generate": cmd_generate, "train": cmd_train, "eval": cmd_eval, "bench": cmd_bench,
                    "results": cmd_results, "lss": cmd_lss,
                    "bench-distributed": cmd_bench_distributed, "fetch": cmd_fetch, "export": cmd_export,
                    "peers": cmd_peers}
        commands[args.command](args)
    except XMCError as e:
        print("error: " + " ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    except OSError as e:                 # an output path the system refuses: a file in the way, a full disk
        print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


def command():
    """The installed `xmc-lab` command (pyproject.toml): main() under that name."""
    return main(prog="xmc-lab")


if __name__ == "__main__":
    sys.exit(main())
