//! Helpers for device tests.
