/// mimalloc instead of glibc's malloc: `kms serve` spent 15% of its CPU in glibc's
/// malloc and free (`malloc_consolidate` among them) across its worker threads; with
/// mimalloc its CPU per SigV4 Decrypt fell from 42 to 28 µs (docs/benchmarks.md, "KMS
/// server over loopback"). Secrets are zeroized before they are freed, whichever
/// allocator frees them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cryptvol::cli::main()
}
