//! Remote-agent operation numbers and argument/result encodings.
