"""Shared plumbing of the end-to-end tests: arguments, PASS/FAIL lines, running the CLI."""
import argparse
import os
import subprocess

FAILURES = []


def parse_args(doc):
    """--sluice (the CLI) and --work-dir (created)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--work-dir", required=True)
    a = ap.parse_args()
    os.makedirs(a.work_dir, exist_ok=True)
    return a


def check(cond, what):
    print(("PASS " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def finish():
    """Exit status: 1 if any check failed."""
    print("%d failed" % len(FAILURES))
    return 1 if FAILURES else 0


def run_sluice(a, *args, check_ok=True, timeout=600):
    """Runs `sluice ARGS`; with check_ok, a non-zero exit raises with its stderr."""
    p = subprocess.run([a.sluice] + list(args), capture_output=True, text=True, timeout=timeout)
    if check_ok and p.returncode != 0:
        raise AssertionError("sluice %s -> exit %d: %s" % (" ".join(args), p.returncode, p.stderr.strip()))
    return p
