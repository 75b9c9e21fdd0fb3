"""Proving a bundle on a device: the device-test runner (local, emulated arm64, ssh), emulation, op tables."""
