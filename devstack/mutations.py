"""A hand-listed mutation check: does the suite fail when a promise it names is broken?

    .venv/bin/python -m devstack.mutations [--only NAME ...] [--list]

Each mutation below breaks one promise of the README in one place, as a plausible bug
would. For each, the tracked files of this checkout are copied to a temporary folder (the
virtual environment and the front-end packages linked, not copied), the change is made
there (its text must occur exactly once, so a refactoring that moves the code makes this
script fail loudly instead of testing nothing), and the tests named for it run against the
copy. A mutation is *killed* when they fail, *survived* when they pass: a hole in the suite.
Prints one line per mutation and exits 1 if any survived. Not part of the 10-minute suite
(it runs parts of it once per mutation); its last result is in the README ("What the tests do").
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINKED = (".venv", "webui/node_modules")  # too big to copy, and not what is mutated


@dataclass(frozen=True)
class Mutation:
    name: str
    promise: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "ack-on-receipt",
        "a reading is acknowledged to the broker only once InfluxDB holds it",
        "bridge/pipeline.py",
        "                    accepted.append(routed.reading)\n                    continue\n",
        "                    accepted.append(routed.reading)\n"
        "                    done.append(item)\n"
        "                    continue\n",
        ("tests/test_no_loss.py",),
    ),
    Mutation(
        "write-twice",
        "every reading is written once (a redelivery at most once more)",
        "bridge/store.py",
        "            self._writer.write([lines[i] for i in indexes])\n",
        "            self._writer.write([lines[i] for i in indexes])\n"
        "            self._writer.write([lines[i] for i in indexes])\n",
        ("tests/test_pipeline.py", "tests/test_no_loss.py"),
    ),
    Mutation(
        "no-influx-retry",
        "a batch InfluxDB cannot take is retried until it does",
        "bridge/store.py",
        "                on_retry()\n",
        "                self._pending = []\n                return Flushed()\n",
        ("tests/test_no_loss.py",),
    ),
    Mutation(
        "skip-future-rule",
        "a reading more than 5 minutes ahead of the bridge's clock is rejected",
        "common/reading.py",
        "        if ts_us > received_us + MAX_FUTURE_US:\n",
        "        if False:\n",
        ("tests/test_reading.py", "tests/test_rejections.py"),
    ),
    Mutation(
        "device-page-no-refetch",
        "the device page fetches its range again after a reconnect (no hole in the chart)",
        "webui/static/device.js",
        "onConnect: () => loadRange(charts.size === 0).catch(",
        "onConnect: () => (charts.size ? Promise.resolve() : loadRange(true)).catch(",
        ("tests/test_dashboard.py", "tests/test_dashboard_pages.py"),
    ),
    Mutation(
        "overview-no-refetch",
        "the overview fetches the devices again after a reconnect",
        "webui/static/overview.js",
        "onConnect: () => loadAll().catch(",
        "onConnect: () => (document.body.dataset.once ? Promise.resolve() : "
        "((document.body.dataset.once = '1'), loadAll())).catch(",
        ("tests/test_dashboard.py", "tests/test_dashboard_pages.py"),
    ),
    Mutation(
        "driver-error-ends-loop",
        "a sensor's unexpected error is a failed read: the sampling loop and the other sensors go on",
        "publisher/sampling.py",
        "                except Exception as exc:  # the loop outlives any driver: see _failure\n",
        "                except SensorReadError as exc:\n",
        ("tests/test_dht.py",),
    ),
    Mutation(
        "api-errors-as-html",
        "every refusal under /api/ is JSON with the reason",
        "webui/__init__.py",
        "    app.register_error_handler(HTTPException, _api_errors_as_json)\n",
        "",
        ("tests/test_web_fuzz.py",),
    ),
    Mutation(
        "zone-oserror",
        "a time zone this machine has not is a clear refusal, whatever the name (tz=Europe)",
        "common/settings.py",
        "    except (ValueError, OSError, ZoneInfoNotFoundError):\n        return None\n",
        "    except (ValueError, ZoneInfoNotFoundError):\n        return None\n",
        ("tests/test_web_fuzz.py", "tests/test_settings.py"),
    ),
)


def copy_tree(into: Path) -> None:
    """The tracked files as they are in the work tree (uncommitted edits included)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for name in files.decode().split("\0"):
        source = ROOT / name
        if name and source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)
    for name in LINKED:
        if (ROOT / name).exists():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            (into / name).symlink_to(ROOT / name)


def run(mutation: Mutation) -> tuple[bool, str, float]:
    """(killed, the last lines of pytest's output, seconds)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant-{mutation.name}-") as name:
        tree = Path(name)
        copy_tree(tree)
        target = tree / mutation.path
        text = target.read_text()
        if text.count(mutation.old) != 1:
            raise SystemExit(
                f"{mutation.name}: the text to change occurs {text.count(mutation.old)} times in "
                f"{mutation.path}, not once: update this mutation"
            )
        target.write_text(text.replace(mutation.old, mutation.new))
        started = time.monotonic()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORPIPE_")}
        result = subprocess.run(
            [
                str(ROOT / ".venv/bin/python"),
                "-m",
                "pytest",
                "-q",
                "-x",
                "-n",
                "2",
                "-p",
                "no:cacheprovider",
                *mutation.tests,
            ],
            check=False,
            cwd=tree,
            env=env,
            capture_output=True,
            text=True,
        )
        tail = "\n".join(line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR")))
        return result.returncode != 0, tail or result.stdout.strip().splitlines()[-1], time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=None, help="these mutations only (names: --list)")
    parser.add_argument("--list", action="store_true", help="print the mutations and stop")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only is None or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"no mutation named {', '.join(sorted(unknown))} (see --list)")
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.promise} ({m.path}; {' '.join(m.tests)})")
        return 0
    survived = []
    for mutation in chosen:
        killed, detail, seconds = run(mutation)
        print(f"{'killed  ' if killed else 'SURVIVED'} {mutation.name} ({seconds:.0f} s): {mutation.promise}")
        for line in detail.splitlines():
            print(f"    {line}")
        if not killed:
            survived.append(mutation.name)
    print(
        f"{len(chosen) - len(survived)} of {len(chosen)} killed"
        + (f"; survived: {', '.join(survived)}" if survived else "")
    )
    print("reproduce: .venv/bin/python -m devstack.mutations" + (f" --only {' '.join(args.only)}" if args.only else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
