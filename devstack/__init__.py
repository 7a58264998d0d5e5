"""Private servers and the local demo; used by `scripts/demo` and the tests."""
