//! `clockctl`, the command-line client (SPEC 5).
