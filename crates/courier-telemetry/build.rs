//! Records the git commit the binary is built from, for `courier_build_info`.
//! `COURIER_GIT_COMMIT` in the build environment wins (packagers building
//! from a tarball set it); outside a git checkout it is `unknown`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=COURIER_GIT_COMMIT");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let commit = std::env::var("COURIER_GIT_COMMIT").ok().or_else(|| {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!(
        "cargo:rustc-env=COURIER_GIT_COMMIT={}",
        commit.unwrap_or_else(|| "unknown".into())
    );
}
