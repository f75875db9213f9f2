//! Paging mode: far memory for unmodified code, through userfaultfd.
