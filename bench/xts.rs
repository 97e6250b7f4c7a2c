//! Placeholder until the XTS engine lands; replaced by the XTS throughput benchmark.
fn main() {}
