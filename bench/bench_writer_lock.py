"""Writer-lock benchmark: how long a second collector on a locked database takes to exit.

    python bench/bench_writer_lock.py              # 5 runs each, idle and with both cores busy
    python bench/bench_writer_lock.py --runs 3 --busy 4

Prints figures; asserts nothing. This process holds ``<db>.writer.lock`` (standing for a
first collector), then starts the second process and measures start to exit (wall clock,
including Python's own start-up). Two ways in:

* **CLI** - ``python collector.py --feed demo --db FILE``: the CLI looks at the lock before it
  imports pandas, numpy and the built-in market (``writer_lock.exit_if_locked``).
* **after imports** - ``python -c "import collector; collector.main([...])"``: the same
  refusal by ``Collector.start`` once every module is imported, i.e. the CLI's path before
  the early look (and the path a locked ``data/<feed>.db`` default still takes).

"busy" runs ``--busy`` pure-Python spinning processes (default 2, one per core of the
project's machine) for the duration of the runs. Every run must end with exit code 2 and
the file named on stderr; a run that does not is printed as a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SPIN = "import time\nwhile True:\n    time.perf_counter()\n"


@contextlib.contextmanager
def busy_cores(n: int):
    """``n`` spinning processes while the block runs (none for n = 0)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0)
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def second_process_seconds(command: list[str], db: str, cwd: str) -> float | str:
    """Seconds from start to exit of ``command``, or why it did not refuse correctly."""
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=cwd)
    seconds = time.perf_counter() - started
    if result.returncode != 2 or db not in result.stderr:
        return f"FAILED: exit {result.returncode}: {result.stderr.strip()[-200:]}"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes when busy")
    args = parser.parse_args()
    import database

    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "held.db")
        cli_args = ["--feed", "demo", "--db", db, "--no-alerts", "--duration", "30"]
        ways = {
            "CLI": [sys.executable, os.path.join(ROOT, "collector.py"), *cli_args],
            "after imports": [sys.executable, "-c",
                              "import sys, collector; sys.exit(collector.main(sys.argv[1:]))",
                              *cli_args],
        }
        lock = database.WriterLock.acquire(db)
        print(f"{'load':6} {'way in':14} {'median s':>9} {'max s':>7}  runs")
        try:
            for load, spinners in (("idle", 0), ("busy", args.busy)):
                with busy_cores(spinners):
                    for way, command in ways.items():
                        # cwd = the project root: "import collector" finds it there
                        results = [second_process_seconds(command, db, ROOT)
                                   for _ in range(args.runs)]
                        failures = [r for r in results if isinstance(r, str)]
                        times = [r for r in results if not isinstance(r, str)]
                        runs = " ".join(f"{t:.2f}" for t in times)
                        print(f"{load:6} {way:14} {statistics.median(times) if times else 0:9.2f} "
                              f"{max(times, default=0):7.2f}  {runs}"
                              + "".join(f"\n       {f}" for f in failures), flush=True)
        finally:
            lock.release()
    print(f"(load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
