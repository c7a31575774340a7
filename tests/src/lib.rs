//! Unprivileged integration tests live in tests/.
