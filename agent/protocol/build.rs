//! Compiles proto/agent.proto into Rust messages and a ttrpc service with ttrpc-codegen.

use std::fs;
use std::path::Path;

fn main() {
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    println!("cargo:rerun-if-changed=proto/agent.proto");
    ttrpc_codegen::Codegen::new()
        .out_dir(&out_dir)
        .inputs(["proto/agent.proto"])
        .include("proto")
        .rust_protobuf()
        .run()
        .expect("ttrpc code generation failed for proto/agent.proto");

    // The generated files are written to be modules of their own: their inner attributes
    // and inner doc comments are not allowed where lib.rs include!s them, so drop them
    // (lib.rs puts the equivalent allow() on the enclosing modules).
    for name in ["agent.rs", "agent_ttrpc.rs"] {
        let path = Path::new(&out_dir).join(name);
        let text = fs::read_to_string(&path).expect("generated file is readable");
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("#![") && !line.starts_with("//!"))
            .collect();
        fs::write(&path, kept.join("\n")).expect("generated file is writable");
    }
}
