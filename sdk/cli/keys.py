"""``edgepack keys new | sign``: Ed25519 signing keys and bundle signatures (docs/signing.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``keys`` (``keys new``) and ``sign`` parsers."""
    k = sub.add_parser("keys", help="make Ed25519 signing keys (NAME.key stays private, NAME.pub goes to devices)")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    n = ksub.add_parser("new", help="write KEYS/NAME.key (mode 0600) and KEYS/NAME.pub; never overwrites")
    n.add_argument("name", help="key name, e.g. release-2026 (the file stem)")
    n.add_argument("--dir", required=True, metavar="KEYS", help="folder for the key pair (created if missing)")
    n.set_defaults(handler=_new)

    s = sub.add_parser("sign", help="sign a bundle in place with a private key (re-signing replaces its signature)")
    s.add_argument("bundle")
    s.add_argument("--key", required=True, metavar="KEYS/NAME.key", help="private key made by `edgepack keys new`")
    s.add_argument("--replace", action="store_true",
                   help="drop other keys' signatures (default: keep those that still cover this bundle)")
    s.set_defaults(handler=_sign)


def _new(args: argparse.Namespace) -> int:
    from edgepack.runtimes.signing import new_key

    priv, pub, kid = new_key(args.name, directory=args.dir)
    print(f"private key {priv} (keep it secret; mode 0600)")
    print(f"public key  {pub} (copy it into each device's trust folder)")
    print(f"key id      {kid}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from edgepack.runtimes.signing import read_signature, sign_bundle

    info = sign_bundle(args.bundle, key=args.key, keep_others=not args.replace)
    count = len((read_signature(args.bundle) or {}).get("signatures", []))
    print(f"signed {args.bundle} ({info.bundle_name} v{info.bundle_version}) with {info.key_name} "
          f"(key id {info.key_id[:16]}…); {count} signature(s)")
    return 0
