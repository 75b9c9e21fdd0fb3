"""``edgepack device-test``: run the on-device suite here, under emulated arm64, or over ssh."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from edgepack.cli import options as cli_args


def register(sub: Any) -> None:
    """Add the ``device-test`` parser."""
    p = sub.add_parser("device-test", help="run device_tests against a bundle (here, --emulate arm64, --ssh)")
    p.add_argument("bundle")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--emulate", choices=("arm64",), help="run in an emulated arm64 userland (qemu)")
    where.add_argument("--ssh", metavar="USER@HOST", help="copy the bundle and suite to a device and run there")
    p.add_argument("--cpu", default="cortex-a72", help="emulated CPU: cortex-a72 (Pi 4), cortex-a76 (Pi 5)")
    p.add_argument("--legacy-tflite", action="store_true", help="emulated: tflite-runtime 2.14 + numpy<2 env")
    p.add_argument("--cache", default=".cache/arm64", help="emulated userland cache folder")
    p.add_argument("--port", type=int, default=None, help="ssh port")
    p.add_argument("--identity", default=None, help="ssh private key")
    p.add_argument("--python", default="python3", help="python on the device")
    cli_args.add_runtime_args(p, purpose="passed to the suite")
    p.add_argument("--stability-runs", type=int, default=None)
    p.add_argument("--budget-from-target", action="store_true")
    p.add_argument("--enforce-budget", action="store_true")
    p.add_argument("--timeout", type=float, default=1800)
    p.set_defaults(handler=_device_test)


def _device_test(args: argparse.Namespace) -> int:
    from edgepack.device.suite import SuiteOptions, run_emulated_arm64, run_local, run_ssh

    backend = args.backend or ("tflite-runtime" if args.legacy_tflite else None)
    options = SuiteOptions(
        delegates=args.delegates or (), backend=backend,
        threads=args.threads, stability_runs=args.stability_runs,
        budget_from_target=args.budget_from_target, enforce_budget=args.enforce_budget,
    )
    bundle = Path(args.bundle)
    if args.emulate:
        return run_emulated_arm64(bundle, options, cache=Path(args.cache), cpu=args.cpu,
                                  legacy_tflite=args.legacy_tflite, timeout=args.timeout)
    if args.ssh:
        return run_ssh(args.ssh, bundle, options, port=args.port, identity=args.identity, python=args.python,
                       timeout=args.timeout)
    return run_local(bundle, options, timeout=args.timeout)
