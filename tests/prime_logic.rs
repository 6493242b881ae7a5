//! The prime example's parser, primality test and handler, tested here
//! because `cargo test` builds examples but does not run their unit tests.
//! The modules are the example's own files; their `#[cfg(test)]` parts run here.

#[path = "../examples/prime/parse.rs"]
mod parse;
#[path = "../examples/prime/primality.rs"]
mod primality;
#[path = "../examples/prime/prime.rs"]
mod prime;
