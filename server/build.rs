//! Embeds the web client: every file under the repository's `web/` directory, except its
//! tests (`web/test/`), `node_modules/`, `package*.json` and dot-files, becomes an entry of
//! `WEB_FILES` in `$OUT_DIR/web_files.rs`, in path order. A missing or empty `web/` makes
//! an empty table: the server still builds and answers `/` with a 404 that says why.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("..").join("web");
    println!("cargo:rerun-if-changed=build.rs");
    // Cargo watches every file below a directory named here (and notices new ones).
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    if web.is_dir() {
        collect(&web, &web, &mut files);
    }
    files.sort();
    let mut out = String::from(
        "/// The web client's files (path under web/, bytes), embedded by build.rs.\n\
         pub static WEB_FILES: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        let _ = writeln!(
            out,
            "    ({rel:?}, include_bytes!({:?})),",
            abs.display().to_string()
        );
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("web_files.rs");
    std::fs::write(&dest, out).expect("write web_files.rs");
}

/// Every servable file below `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || name == "node_modules"
            || name.starts_with("package") && name.ends_with(".json")
        {
            continue;
        }
        let rel: Vec<String> = path
            .strip_prefix(root)
            .expect("below the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if rel.first().map(String::as_str) == Some("test") {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if path.is_file() {
            files.push((rel.join("/"), path.canonicalize().unwrap_or(path)));
        }
    }
}
