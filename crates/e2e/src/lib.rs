//! Test-only crate: its tests (under `tests/`) run the real API and worker together; it ships
//! nothing.
