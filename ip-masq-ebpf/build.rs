//! Rebuild the eBPF object when bpf-linker changes: cargo cannot see that the
//! linker is an input otherwise.
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
