// Rebuild when the commit to report on /healthz and /metrics changes.
fn main() {
    println!("cargo:rerun-if-env-changed=HELLO_GIT_COMMIT");
}
