"""``edgepack store install|rollback|status|recover``: A/B bundle slots on the device (runtimes/store.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from edgepack.cli import options as cli_args
from edgepack.runtimes.store import BundleStore, SlotInfo, StoreStatus


def register(subparsers: Any) -> None:
    """Add the ``store`` command and its sub-commands."""
    store = subparsers.add_parser("store", help="install bundles into A/B slots with a self-test; roll back")
    sub = store.add_subparsers(dest="store_command", required=True)

    i = sub.add_parser("install", help="verify + self-test a bundle here, then make it active atomically")
    i.add_argument("directory", help="store directory (created when missing)")
    i.add_argument("bundle", help=".epk bundle to install")
    i.add_argument("--trust", metavar="KEYS", default=None,
                   help="folder of trusted .pub keys (+ revoked.txt): refuse a bundle they did not sign")
    i.add_argument("--allow-downgrade", action="store_true",
                   help="install a version older than the one installed before under the same name")
    _self_test_args(i)
    i.set_defaults(handler=_install)

    r = sub.add_parser("rollback", help="make the previous bundle active again (after a self-test)")
    r.add_argument("directory")
    _self_test_args(r)
    r.set_defaults(handler=_rollback)

    s = sub.add_parser("status", help="show the active and previous bundles (exit 1 when a slot is corrupt)")
    s.add_argument("directory")
    s.add_argument("--json", action="store_true", help="print the status as JSON")
    s.set_defaults(handler=_status)

    c = sub.add_parser("recover", help="repair the store from its generation log, re-verifying what it activates")
    c.add_argument("directory")
    cli_args.add_runtime_args(c, threads=False, purpose="self-test")
    c.set_defaults(handler=_recover)


def _self_test_args(p: argparse.ArgumentParser) -> None:
    cli_args.add_runtime_args(p, purpose="self-test")
    p.add_argument("--lock-timeout", type=float, default=60.0, help="seconds to wait for another install")


def _install(args: argparse.Namespace) -> int:
    store = BundleStore(args.directory, lock_timeout=args.lock_timeout, trust=args.trust)
    st = store.install(args.bundle, backend=args.backend, delegates=args.delegates, num_threads=args.threads,
                       allow_downgrade=args.allow_downgrade)
    if st.active is not None:
        print(f"installed {_describe(st.active)}; self-test passed on {st.active.self_test}")
    _print(st)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    BundleStore(args.directory, read_only=True).require_exists()  # never create a store to roll it back
    store = BundleStore(args.directory, lock_timeout=args.lock_timeout)
    st = store.rollback(backend=args.backend, delegates=args.delegates, num_threads=args.threads)
    print("rolled back")
    _print(st)
    return 0


def _status(args: argparse.Namespace) -> int:
    store = BundleStore(args.directory, read_only=True)
    store.require_exists()  # a mistyped path is an error, not an empty store
    st = store.status()
    if args.json:
        print(json.dumps(st.to_json(), indent=2))
    else:
        _print(st)
        for note in st.notes:
            print(f"  problem:  {note}")
    return 1 if st.notes else 0


def _recover(args: argparse.Namespace) -> int:
    BundleStore(args.directory, read_only=True).require_exists()
    store = BundleStore(args.directory)
    st = store.recover(backend=args.backend, delegates=args.delegates)
    print("recovered: " + "; ".join(st.notes) if st.notes else "nothing to recover: the active and previous slots "
          "verify and pass their self-test")
    _print(st)
    return 0


def _describe(slot: SlotInfo) -> str:
    return f"{slot.name} v{slot.version} ({slot.precision}, {slot.bytes / 1e6:.2f} MB, sha256 {slot.sha256[:16]}…)"


def _print(st: StoreStatus) -> None:
    print(f"store {st.directory} (generation {st.generation})")
    for role, slot in (("active", st.active), ("previous", st.previous)):
        if slot is None:
            print(f"  {role + ':':9} none")
        else:
            print(f"  {role + ':':9} {_describe(slot)}, installed {slot.installed}, self-test {slot.self_test}")
