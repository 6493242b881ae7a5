//! The prime example's parser, primality test and handler, tested here:
//! `cargo test` builds examples but does not run their unit tests, and
//! `[[example]] test = true` would build the example as a test harness
//! instead of the binary the process tests run. The modules are the
//! example's own files; their `#[cfg(test)]` parts run here.

#[path = "../examples/prime/parse.rs"]
mod parse;
#[path = "../examples/prime/primality.rs"]
mod primality;
#[path = "../examples/prime/prime.rs"]
mod prime;
