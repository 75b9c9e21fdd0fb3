"""On-device test suite: ``pytest device_tests --bundle model.epk`` (needs only the runtime extras + pytest)."""
