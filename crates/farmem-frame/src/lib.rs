//! A columnar DataFrame on far memory.
