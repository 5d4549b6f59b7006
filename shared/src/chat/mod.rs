//! End-to-end encrypted, reliable and ordered chat session (work in progress).
