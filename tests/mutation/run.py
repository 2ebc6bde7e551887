"""Apply each mutation of :mod:`tests.mutation.mutations` to a copy of the working tree, run
the tests that should catch it, and report caught, missed or error.

The working tree (tracked files and untracked ones git does not ignore) is copied once into a
temporary directory; every mutation then runs in a fresh copy of that snapshot, so edits made
to the checkout meanwhile do not mix into a run, and one mutation never leaks into the next.
pytest runs in the copy with this interpreter (the project's virtual environment), so the
copy's ``tests/conftest.py`` and modules are the ones imported (``pythonpath = ["."]``).

Outcomes: pytest exiting 1 (a test failed) is *caught*, 0 is *missed*; anything else (a
snippet not found exactly once, a mutated file that does not compile, collection or usage
errors, a time-out) is an *error*, never counted as caught.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.mutation.mutations import MUTATIONS, Mutation

REPO = Path(__file__).resolve().parents[2]
PYTEST = (sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider")
INTERRUPT_GRACE_S = 30  # for pytest's own teardown (served subprocesses) after a time-out
CAUGHT, MISSED, ERROR = "caught", "missed", "error"
REPORTED_LINES = 3  # failure summary lines shown per caught mutation
SUMMARY_LINE = re.compile(r"(FAILED|ERROR) \S+\.py")  # not captured log lines ("ERROR    name:...")


class MutationNotApplied(Exception):
    """The mutation cannot be applied as written (the code it targets has changed)."""


@dataclass(frozen=True)
class Result:
    mutation: Mutation
    outcome: str
    seconds: float
    detail: str


def working_tree_files(repo: Path) -> list[Path]:
    """Tracked files and untracked ones that git does not ignore, relative to ``repo``."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                            check=True, capture_output=True).stdout
    return [Path(name) for name in dict.fromkeys(listed.decode().split("\0")) if name]


def snapshot(repo: Path, destination: Path) -> None:
    """Copy the working tree of ``repo`` into ``destination`` (deleted tracked files skipped)."""
    for relative in working_tree_files(repo):
        source = repo / relative
        if not source.is_file() and not source.is_symlink():
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


def mutated_source(mutation: Mutation, tree: Path) -> str:
    """The mutation's file in ``tree`` with its snippet replaced; :class:`MutationNotApplied`
    unless the snippet occurs exactly once and the mutated Python file still compiles."""
    path = tree / mutation.file
    if not path.is_file():
        raise MutationNotApplied(f"{mutation.file} does not exist")
    source = path.read_text(encoding="utf-8")
    count = source.count(mutation.snippet)
    if count != 1:
        raise MutationNotApplied(f"snippet found {count} times in {mutation.file}, expected once")
    mutated = source.replace(mutation.snippet, mutation.replacement)
    if path.suffix == ".py":
        try:
            compile(mutated, str(path), "exec")
        except SyntaxError as error:
            raise MutationNotApplied(f"mutated {mutation.file} does not compile: {error}") from None
    return mutated


def applicability(mutation: Mutation, tree: Path) -> str:
    """``"applies"``, or why the mutation cannot be applied to ``tree``."""
    try:
        mutated_source(mutation, tree)
    except MutationNotApplied as error:
        return str(error)
    return "applies"


def stop(process: subprocess.Popen) -> None:
    """End a timed-out pytest: SIGINT first (its fixtures stop the servers they started),
    then SIGKILL to it and to every descendant still alive, since a served ``bentoml serve``
    runs in a session of its own. psutil refuses to signal a pid that a new process reuses."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=INTERRUPT_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            continue
    process.wait()


def run_pytest(tree: Path, tests: tuple[str, ...], timeout_s: int, log: Path) -> int | None:
    """pytest's exit status on ``tests`` in ``tree``, output to ``log``; ``None`` on time-out."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the copy is thrown away with its bytecode
    with open(log, "wb") as output:
        process = subprocess.Popen([*PYTEST, *tests], cwd=tree, env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop(process)
            return None
        except BaseException:
            stop(process)
            raise


def failure_lines(output: str) -> str:
    """The short summary's first FAILED/ERROR lines: which test caught the mutation."""
    lines = [line for line in output.splitlines() if SUMMARY_LINE.match(line)]
    return "; ".join(line.split(" - ")[0] for line in lines[:REPORTED_LINES])


def last_line(output: str) -> str:
    return next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")


def fresh_copy(pristine: Path, scratch: Path) -> Path:
    """A new copy of the snapshot, replacing the previous run's."""
    tree = scratch / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    shutil.copytree(pristine, tree, symlinks=True)
    return tree


def check(mutation: Mutation, pristine: Path, scratch: Path) -> Result:
    """Run one mutation in a fresh copy of ``pristine``."""
    started = time.monotonic()
    tree = fresh_copy(pristine, scratch)
    try:
        mutated = mutated_source(mutation, tree)
    except MutationNotApplied as error:
        return Result(mutation, ERROR, time.monotonic() - started, str(error))
    (tree / mutation.file).write_text(mutated, encoding="utf-8")
    log = scratch / f"{mutation.name}.log"
    status = run_pytest(tree, mutation.tests, mutation.timeout_s, log)
    output = log.read_text(encoding="utf-8", errors="replace")
    seconds = time.monotonic() - started
    if status is None:
        return Result(mutation, ERROR, seconds, f"timed out after {mutation.timeout_s} s")
    if status == 1:
        return Result(mutation, CAUGHT, seconds, failure_lines(output))
    if status == 0:
        return Result(mutation, MISSED, seconds, last_line(output))
    return Result(mutation, ERROR, seconds, f"pytest exit {status}: {last_line(output)}")


def baseline_passes(mutations: list[Mutation], pristine: Path, scratch: Path) -> bool:
    """Whether the mutations' tests pass on the unmutated snapshot, in one pytest run: a test
    that fails anyway would count every mutation it is named for as caught."""
    tests = tuple(dict.fromkeys(test for mutation in mutations for test in mutation.tests))
    print(f"baseline: {len(tests)} test ids, unmutated ...", end=" ", flush=True)
    log = scratch / "baseline.log"
    timeout_s = sum(mutation.timeout_s for mutation in mutations)
    status = run_pytest(fresh_copy(pristine, scratch), tests, timeout_s, log)
    output = log.read_text(encoding="utf-8", errors="replace")
    print(last_line(output), flush=True)
    if status != 0:
        print(f"the baseline failed (pytest exit {status}):\n{output[-4000:]}")
    return status == 0


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]])
                     for row in rows)


def report(results: list[Result], total_s: float) -> str:
    rows = [("mutation", "result", "time", "detail")]
    rows += [(r.mutation.name, r.outcome, f"{r.seconds:.0f} s", r.detail) for r in results]
    counts = ", ".join(f"{sum(r.outcome == outcome for r in results)} {outcome}"
                       for outcome in (CAUGHT, MISSED, ERROR))
    return f"{table(rows)}\n\n{counts}; {len(results)} mutations in {total_s / 60:.1f} min"


def listing(mutations: list[Mutation]) -> str:
    lines = []
    for mutation in mutations:
        lines.append(f"{mutation.name}  ({mutation.file}: {applicability(mutation, REPO)})")
        lines.append(f"    {mutation.why}")
        lines += [f"    - {test}" for test in mutation.tests]
    return "\n".join(lines)


def select(names: list[str] | None, parser: argparse.ArgumentParser) -> list[Mutation]:
    if not names:
        return list(MUTATIONS)
    known = {mutation.name: mutation for mutation in MUTATIONS}
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    return [known[name] for name in dict.fromkeys(names)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests, run nothing")
    parser.add_argument("--baseline", action="store_true",
                        help="first run all the selected mutations' tests unmutated; stop if any fails")
    args = parser.parse_args(argv)
    mutations = select(args.only, parser)
    if args.list:
        print(listing(mutations))
        return 0
    started = time.monotonic()
    results: list[Result] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mutation-check-") as scratch_dir:
            scratch = Path(scratch_dir)
            pristine = scratch / "pristine"
            snapshot(REPO, pristine)
            if args.baseline and not baseline_passes(mutations, pristine, scratch):
                return 2
            for number, mutation in enumerate(mutations, 1):
                print(f"[{number}/{len(mutations)}] {mutation.name} ...", end=" ", flush=True)
                result = check(mutation, pristine, scratch)
                print(f"{result.outcome} ({result.seconds:.0f} s)", flush=True)
                results.append(result)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} of {len(mutations)} mutations")
        if results:
            print(report(results, time.monotonic() - started))
        return 130
    print()
    print(report(results, time.monotonic() - started))
    return 0 if all(result.outcome == CAUGHT for result in results) else 1
