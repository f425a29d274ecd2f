//! Readers and writers of gradient files.
