"""Bundle benchmark on a generated store of --events signed events (default 1,000,000).

    python bench/bundle_bench.py [--events 1000000] [--database-url URL]
                                 [--keep-store --home DIR | --store URL --home DIR]
                                 [--exports archive,casebooks,bundle]

Generates the store with read_bench's generator (about 490 events a subject), projects the
read tables, then runs each export in a fresh process, in this one run:
  - baseline: the ODM Transactional archive (``export --format odm-archive``) into a file
  - the casebooks zip (``export --format casebook``)
  - the regulator's bundle (``export --format bundle``: the ledger, casebooks, CSV,
    Dataset-JSON, ODM, XPT and the signed manifest)       (targets: <= 10 min at 1M events,
                                                            peak RSS <= 300 MB, <= 3x archive)
Peak RSS is the process tree's: the export and its rendering workers, sampled together every
0.1 s (summed RSS, which counts shared pages once per process, and summed PSS, which does not).
Wall time on a shared machine is mostly waiting: the CPU seconds (with the workers') are
printed beside it.
With --keep-store the generated database outlives the run (its signing key stays in --home)
and --store URL --home DIR measures it again without generating; --exports leaves some
out (the archive, the baseline, is always run). Prints, per export:

    BENCH bundle value=<s> unit=s baseline=<odm-archive s> ratio=<bundle / archive>
          peak_rss_mb=<MB> events=<n>
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from bench_lines import bench_line  # bench/ is the script's directory, hence on sys.path
from store_options import add_store_arguments

# The project's modules are imported inside the functions: the casebook workers are spawned
# processes that import this script again, and must weigh what they weigh under the CLI.
STUDY = "NCT04397107"
EXPORTS = ("archive", "casebooks", "bundle")


def measure(what: str, url: str, home: Path, output: Path) -> None:
    """Child process: run one export into ``output``, print its figures as JSON."""
    from application.exports import write_bundle_file, write_casebook_zip, write_rendering
    from application.runtime import Runtime
    from infra.settings import Settings

    runtime = Runtime(Settings(database_url=url, home=home), url)
    try:
        started, subjects = time.perf_counter(), 0
        if what == "archive":
            with output.open("wb") as out:
                write_rendering(runtime, STUDY, "odm-archive", out, None)
        elif what == "casebooks":
            subjects = write_casebook_zip(runtime, STUDY, output, None)
        else:
            write_bundle_file(runtime, STUDY, output)
        elapsed = time.perf_counter() - started
    finally:
        runtime.close()
    times = os.times()  # with the finished rendering workers'
    cpu = times.user + times.system + times.children_user + times.children_system
    print(json.dumps({"seconds": elapsed, "cpu_s": cpu, "bytes": output.stat().st_size,
                      "subjects": subjects}))


def tree_memory(process: psutil.Process) -> tuple[int, int, list[tuple[str, int]]]:
    """Resident bytes of ``process`` and all its descendants now, summed: their RSS (shared
    pages counted in each process) and their PSS (shared pages split between them); and each
    process's RSS, named (where the tree's peak comes from)."""
    rss = pss = 0
    each: list[tuple[str, int]] = []
    with contextlib.suppress(psutil.Error):
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                memory = p.memory_full_info()
                rss += memory.rss
                pss += memory.pss
                each.append((_name(p, process), memory.rss))
    return rss, pss, each


def _name(p: psutil.Process, root: psutil.Process) -> str:
    """The export process, the resource tracker, or a rendering process by its pid."""
    if p.pid == root.pid:
        return "export"
    with contextlib.suppress(psutil.Error):
        if any("resource_tracker" in part for part in p.cmdline()):
            return "resource-tracker"
    return f"child-{p.pid}"


def run_child(what: str, url: str, home: Path, output: Path) -> dict[str, float]:
    """Run one export in a child process, sampling its tree's resident memory meanwhile."""
    child = subprocess.Popen([sys.executable, __file__, "--measure", what, "--store", url,
                              "--home", str(home), "--output", str(output)],
                             stdout=subprocess.PIPE, text=True)
    watched = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    at_peak: list[tuple[str, int]] = []
    peaks: dict[str, int] = {}  # each process's own peak
    started = time.perf_counter()
    peak_at = 0.0
    while child.poll() is None:
        rss, pss, each = tree_memory(watched)
        if rss > peak_rss:
            at_peak, peak_at = each, time.perf_counter() - started
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        for name, resident in each:
            peaks[name] = max(peaks.get(name, 0), resident)
        time.sleep(0.1)
    out = child.stdout.read() if child.stdout else ""
    if child.returncode:
        raise SystemExit(f"{what} failed with exit code {child.returncode}")
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    figures["peak_mb"] = peak_rss / 2**20
    figures["peak_pss_mb"] = peak_pss / 2**20
    print(f"  {what}: the tree's peak at {peak_at:.0f} s: "
          + ", ".join(f"{name} {resident / 2**20:.0f} MB" for name, resident in at_peak)
          + "; each process's own peak: "
          + ", ".join(f"{name} {resident / 2**20:.0f} MB" for name, resident in peaks.items()),
          flush=True)
    output.unlink()
    return figures


def main() -> None:
    """Generate (or take a kept store), export each way, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    add_store_arguments(parser)
    parser.add_argument("--exports", default=",".join(EXPORTS),
                        help="the exports to run besides the archive, comma-separated")
    parser.add_argument("--measure", choices=EXPORTS, help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="tl-bench-"))
    if args.measure:
        measure(args.measure, args.store, home, Path(args.output))
        return
    from read_bench import generate, store_url

    from application.runtime import Runtime
    from infra.settings import Settings

    settings = Settings(database_url=Settings.from_env(args.database_url).database_url,
                        home=home)
    with contextlib.ExitStack() as stack:
        url = store_url(stack, settings, args.store, args.keep_store)
        runtime = Runtime(settings, url)
        started = time.perf_counter()
        if not args.store:
            generate(runtime, args.events, random.Random(1))
        generated_s = time.perf_counter() - started
        total = runtime.study(STUDY).recorder.max_notification_id() or 0
        runtime.project(STUDY)
        runtime.close()
        out = Path(tempfile.mkdtemp(prefix="tl-bundle-"))
        figures = {}
        wanted = {"archive", *args.exports.split(",")}
        for what in (e for e in EXPORTS if e in wanted):
            figures[what] = run_child(what, url, home, out / what)
            f = figures[what]
            print(f"  {what:10} {f['seconds']:8.1f} s  CPU {f['cpu_s']:8.1f} s  "
                  f"peak RSS (tree) {f['peak_mb']:6.0f} MB (PSS {f['peak_pss_mb']:4.0f})  "
                  f"{f['bytes'] / 2**20:6.0f} MiB  "
                  f"(load {os.getloadavg()[0]:.1f})",
                  flush=True)
        out.rmdir()
    subjects = figures["casebooks"]["subjects"] if "casebooks" in figures else "?"
    print(f"bundle benchmark: {total} events, {subjects} subjects "
          f"({'kept store' if args.store else f'generated in {generated_s:.0f} s'}); "
          "targets: bundle <= 600 s at 1M events, peak RSS <= 300 MB, <= 3x odm-archive")
    archive = figures["archive"]
    print(bench_line("odm_archive", archive["seconds"], "s", peak_rss_mb=archive["peak_mb"],
                     peak_pss_mb=archive["peak_pss_mb"], cpu_s=archive["cpu_s"],
                     events=total))
    for what in (e for e in ("casebooks", "bundle") if e in figures):
        f = figures[what]
        print(bench_line(what if what == "bundle" else "casebook_zip", f["seconds"], "s",
                         archive["seconds"], peak_rss_mb=f["peak_mb"],
                         peak_pss_mb=f["peak_pss_mb"], cpu_s=f["cpu_s"], events=total))


if __name__ == "__main__":
    main()
