//! Builds the eBPF programs in `agent-ebpf/` with the pinned nightly and bpf-linker.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// bpf-linker is linked against this toolchain's LLVM (see DEVELOPERS.md); pin it by name.
const EBPF_TOOLCHAIN: &str = "nightly-x86_64-unknown-linux-gnu";

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "sockmesh-ebpf")
        .ok_or_else(|| anyhow!("sockmesh-ebpf package not found"))?;
    let cargo_metadata::Package {
        name,
        manifest_path,
        ..
    } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let ebpf_package = aya_build::Package {
        name: name.as_str(),
        root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf_package], Toolchain::Custom(EBPF_TOOLCHAIN))
}
