/// glibc's malloc, with mimalloc for small blocks in `kms serve` (why: `sys::allocator`).
#[global_allocator]
static ALLOCATOR: cryptvol::sys::allocator::SplitAllocator =
    cryptvol::sys::allocator::SplitAllocator;

fn main() -> std::process::ExitCode {
    cryptvol::cli::main()
}
