//! `--config FILE`: a TOML file of settings, equivalent to the flags.
//!
//! Each key is a flag's long name (`listen`, `heartbeat-timeout`, `admin`, …) and its value
//! what the flag would take: a string, a number, or for a flag that repeats, an array.
//! Precedence, highest first: the command line, the environment (`BREEZE_*`), the file, the
//! built-in defaults. The file's values become the flags' defaults, so clap parses and
//! checks them exactly as it checks flags, and a bad value names the flag.

use clap::{Arg, Command};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The flag that names the file, and its environment variable.
pub const FLAG: &str = "--config";
pub const ENV: &str = "BREEZE_CONFIG";

/// Why the file could not be used; one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error(
        "the config file {} sets `{key}`, which is not a setting (settings are the flags' long \
         names, like `listen` or `heartbeat-timeout`; see breeze-server --help)",
        path.display()
    )]
    Unknown { path: PathBuf, key: String },
    #[error(
        "the config file {} sets `{key}` to {what}; give a string, a number{array}",
        path.display()
    )]
    Value {
        path: PathBuf,
        key: String,
        what: &'static str,
        array: &'static str,
    },
}

/// The config file named by `--config FILE`/`--config=FILE` in `argv`, else by
/// `BREEZE_CONFIG`. Looked for before clap parses, because the file changes what it parses.
pub fn named(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == FLAG {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os(ENV).map(PathBuf::from)
}

/// `cmd` with the settings of the file at `path` as its flags' defaults.
pub fn apply(cmd: Command, path: &Path) -> Result<Command, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigFileError::Syntax {
                path: path.to_path_buf(),
                message: e.to_string().trim().replace('\n', " "),
            })?;
    let mut cmd = cmd;
    for (key, value) in table {
        let id = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && key != "config")
            .map(|a| a.get_id().clone())
            .ok_or_else(|| ConfigFileError::Unknown {
                path: path.to_path_buf(),
                key: key.clone(),
            })?;
        let bad = |what: &'static str, array: &'static str| ConfigFileError::Value {
            path: path.to_path_buf(),
            key: key.clone(),
            what,
            array,
        };
        let repeats = cmd
            .get_arguments()
            .find(|a| *a.get_id() == id)
            .is_some_and(|a| {
                a.get_num_args().is_some_and(|n| n.max_values() > 1)
                    || matches!(a.get_action(), clap::ArgAction::Append)
            });
        let values: Vec<String> = match value {
            toml::Value::Array(items) if repeats => items
                .into_iter()
                .map(|v| {
                    scalar(v)
                        .ok_or_else(|| bad("an array of something else", ", or an array of them"))
                })
                .collect::<Result<_, _>>()?,
            toml::Value::Array(_) => return Err(bad("an array", "")),
            other => vec![scalar(other).ok_or_else(|| {
                bad(
                    "a table or a date",
                    if repeats { ", or an array of them" } else { "" },
                )
            })?],
        };
        cmd = cmd.mut_arg(id, |arg: Arg| arg.default_values(values));
    }
    Ok(cmd)
}

fn scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}
