//! What the Breeze binaries share about their flags: a value clap refused, explained by where
//! it came from and what is expected.
//!
//! clap names only the flag (`invalid value 'abc' for '--heartbeat-interval <DURATION>'`),
//! even when the value came from the flag's environment variable or from a config file, where
//! a user looking for `--heartbeat-interval` on their command line finds nothing. `explain`
//! rewrites such an error to name the variable or the file as well, and what a good value
//! looks like, read off the flag's value name or its possible values; every flag of both
//! binaries goes through it, none is explained by hand.

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, Command};
use std::error::Error as _;
use std::ffi::OsString;

/// The process's arguments parsed into `P`, or the program ends with the error explained
/// (`--help` and `--version` print and end as usual).
pub fn parse<P: clap::Parser>() -> P {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = P::command();
    cmd.clone()
        .try_get_matches_from(&argv)
        .and_then(|matches| P::from_arg_matches(&matches))
        .unwrap_or_else(|e| explain(e, &cmd, &argv, None).exit())
}

/// `error` explained when it is about a refused value; any other error as it was. `argv` is
/// what was parsed (program name first); `defaults_from` names where the flags' defaults came
/// from when not built in (`the config file /etc/breeze.toml`).
pub fn explain(
    error: clap::Error,
    cmd: &Command,
    argv: &[OsString],
    defaults_from: Option<&str>,
) -> clap::Error {
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return error;
    }
    let (Some(ContextValue::String(shown)), Some(ContextValue::String(value))) = (
        error.get(ContextKind::InvalidArg),
        error.get(ContextKind::InvalidValue),
    ) else {
        return error;
    };
    let Some(arg) = find(cmd, shown) else {
        return error;
    };
    let reason = error.source().map(|e| e.to_string());
    let message = describe(
        arg,
        value,
        source(arg, argv, defaults_from),
        reason.as_deref(),
    );
    clap::Error::raw(error.kind(), format!("{message}\n")).with_cmd(cmd)
}

/// Where a refused value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    CommandLine,
    Environment(&'a str),
    /// The flags' defaults: the config file, as the caller named it.
    Defaults(&'a str),
}

/// The command line wins over the environment, which wins over the defaults: the value came
/// from the first of them that has one.
fn source<'a>(arg: &'a Arg, argv: &[OsString], defaults_from: Option<&'a str>) -> Source<'a> {
    if arg.is_positional() || on_command_line(arg, argv) {
        return Source::CommandLine;
    }
    if let Some(env) = arg.get_env().and_then(|e| e.to_str())
        && std::env::var_os(env).is_some()
    {
        return Source::Environment(env);
    }
    defaults_from.map_or(Source::CommandLine, Source::Defaults)
}

fn on_command_line(arg: &Arg, argv: &[OsString]) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short().map(|s| format!("-{s}"));
    argv.iter()
        .skip(1)
        .map_while(|a| a.to_str().filter(|a| *a != "--"))
        .any(|a| {
            long.as_deref()
                .is_some_and(|l| a == l || a.strip_prefix(l).is_some_and(|r| r.starts_with('=')))
                || short
                    .as_deref()
                    .is_some_and(|s| !a.starts_with("--") && a.starts_with(s))
        })
}

/// The sentence for `value` refused for `arg`.
pub fn describe(arg: &Arg, value: &str, source: Source<'_>, reason: Option<&str>) -> String {
    let flag = flag(arg);
    let mut text = match source {
        Source::CommandLine => format!("invalid value '{value}' for {flag}"),
        Source::Environment(env) if arg.is_hide_env_values_set() => {
            format!("invalid value for {env} (environment; flag {flag})")
        }
        Source::Environment(env) => {
            format!("invalid value '{value}' for {env} (environment; flag {flag})")
        }
        Source::Defaults(from) => {
            let key = arg.get_long().unwrap_or(arg.get_id().as_str());
            format!("invalid value '{value}' for {key} in {from} (flag {flag})")
        }
    };
    match (expected(arg), reason) {
        (Some(expected), Some(reason)) => {
            text.push_str(&format!(": expected {expected} ({reason})"));
        }
        (Some(expected), None) => text.push_str(&format!(": expected {expected}")),
        (None, Some(reason)) => text.push_str(&format!(": {reason}")),
        (None, None) => {}
    }
    text
}

/// `--long`, `-s`, or a positional's `NAME`.
fn flag(arg: &Arg) -> String {
    if let Some(long) = arg.get_long() {
        format!("--{long}")
    } else if let Some(short) = arg.get_short() {
        format!("-{short}")
    } else {
        arg.get_value_names()
            .and_then(|names| names.first())
            .map_or_else(|| arg.get_id().to_string(), ToString::to_string)
    }
}

/// What a good value looks like: by the flag's possible values, else by its value name (the
/// names both binaries use for the same kind of value).
fn expected(arg: &Arg) -> Option<String> {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_string())
        .collect();
    if !possible.is_empty() {
        return Some(format!("one of {}", possible.join(", ")));
    }
    let name = arg.get_value_names()?.first()?.as_str();
    let expected = match name {
        "DURATION" => "a duration such as 10s, 1m30s or 500ms",
        "ADDR" | "HOST:PORT" => "an address and port such as 127.0.0.1:7878 or localhost:7878",
        "ADDR|off" => "an address and port such as 127.0.0.1:8080, or off",
        "BYTES" => "a whole number of bytes such as 1048576 (no unit)",
        "KIB" => "a whole number of KiB such as 19456 (no unit)",
        "N" | "FRAMES" | "PER_SECOND" => "a whole number",
        "USER" => "a user name: 1 to 32 of A-Z a-z 0-9 _ - . not starting with . or -",
        _ => return None,
    };
    Some(expected.to_string())
}

/// The argument clap showed as `shown` (`--heartbeat-interval <DURATION>`, `-s <X>`,
/// `<USER>`), in `cmd` or any of its subcommands.
fn find<'a>(cmd: &'a Command, shown: &str) -> Option<&'a Arg> {
    let first = shown.split_whitespace().next()?;
    let matches = |arg: &&Arg| {
        if let Some(long) = first.strip_prefix("--") {
            arg.get_long() == Some(long.split('=').next().unwrap_or(long))
        } else if let Some(short) = first.strip_prefix('-') {
            short
                .chars()
                .next()
                .is_some_and(|s| arg.get_short() == Some(s))
        } else {
            let name = first.trim_start_matches('<').trim_end_matches("...");
            let name = name.trim_end_matches('>');
            arg.is_positional()
                && (arg.get_id() == name
                    || arg
                        .get_value_names()
                        .is_some_and(|names| names.iter().any(|n| n == name)))
        }
    };
    cmd.get_arguments()
        .find(matches)
        .or_else(|| cmd.get_subcommands().find_map(|sub| find(sub, shown)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::builder::PossibleValuesParser;

    fn cmd() -> Command {
        Command::new("tool")
            .arg(
                Arg::new("interval")
                    .long("heartbeat-interval")
                    .env("TOOL_TEST_INTERVAL")
                    .value_name("DURATION")
                    .value_parser(|s: &str| s.parse::<u64>().map_err(|e| e.to_string())),
            )
            .arg(
                Arg::new("scope")
                    .long("scope")
                    .env("TOOL_TEST_SCOPE")
                    .value_parser(PossibleValuesParser::new(["everyone", "contacts"])),
            )
            .arg(
                Arg::new("secret")
                    .long("secret")
                    .env("TOOL_TEST_SECRET")
                    .hide_env_values(true)
                    .value_name("N")
                    .value_parser(clap::value_parser!(u32)),
            )
            .subcommand(
                Command::new("send").arg(
                    Arg::new("to")
                        .long("to")
                        .value_name("USER")
                        .value_parser(|s: &str| {
                            if s.contains('@') {
                                Err("may only contain letters".to_string())
                            } else {
                                Ok(s.to_string())
                            }
                        }),
                ),
            )
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("tool")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// The explained message for `args` (no environment).
    fn message(args: &[&str], defaults_from: Option<&str>) -> String {
        let argv = argv(args);
        let cmd = cmd();
        let err = cmd.clone().try_get_matches_from(&argv).unwrap_err();
        explain(err, &cmd, &argv, defaults_from).to_string()
    }

    #[test]
    fn a_bad_flag_names_the_flag_and_the_format() {
        assert_eq!(
            message(&["--heartbeat-interval", "abc"], None),
            "error: invalid value 'abc' for --heartbeat-interval: expected a duration such as \
             10s, 1m30s or 500ms (invalid digit found in string)\n"
        );
        assert_eq!(
            message(&["--scope=world"], None),
            "error: invalid value 'world' for --scope: expected one of everyone, contacts\n"
        );
        assert_eq!(
            message(&["send", "--to", "b@d"], None),
            "error: invalid value 'b@d' for --to: expected a user name: 1 to 32 of A-Z a-z 0-9 \
             _ - . not starting with . or - (may only contain letters)\n"
        );
    }

    #[test]
    fn a_value_from_the_environment_names_the_variable() {
        let arg = cmd()
            .get_arguments()
            .find(|a| a.get_id() == "interval")
            .cloned()
            .unwrap();
        assert_eq!(
            describe(&arg, "abc", Source::Environment("TOOL_TEST_INTERVAL"), None),
            "invalid value 'abc' for TOOL_TEST_INTERVAL (environment; flag \
             --heartbeat-interval): expected a duration such as 10s, 1m30s or 500ms"
        );
        let secret = cmd()
            .get_arguments()
            .find(|a| a.get_id() == "secret")
            .cloned()
            .unwrap();
        let text = describe(
            &secret,
            "hunter2",
            Source::Environment("TOOL_TEST_SECRET"),
            None,
        );
        assert!(
            !text.contains("hunter2"),
            "a hidden value stays hidden: {text}"
        );
    }

    #[test]
    fn a_value_from_the_defaults_names_their_file_and_key() {
        // Not on the command line and no variable set: it came from the config file.
        let argv = argv(&[]);
        let cmd = cmd().mut_arg("interval", |a| a.default_value("soon"));
        let err = cmd.clone().try_get_matches_from(&argv).unwrap_err();
        let text = explain(err, &cmd, &argv, Some("the config file /etc/tool.toml")).to_string();
        assert!(
            text.starts_with(
                "error: invalid value 'soon' for heartbeat-interval in the config file \
                 /etc/tool.toml (flag --heartbeat-interval): expected a duration"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_flag_on_the_command_line_is_told_from_its_variable() {
        let cmd = cmd();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "interval")
            .unwrap();
        for (args, on) in [
            (&["--heartbeat-interval", "1"][..], true),
            (&["--heartbeat-interval=1"], true),
            (&["--heartbeat-intervals=1"], false),
            (&["--", "--heartbeat-interval"], false),
            (&["send"], false),
        ] {
            assert_eq!(on_command_line(arg, &argv(args)), on, "{args:?}");
        }
    }

    #[test]
    fn other_errors_are_left_as_clap_words_them() {
        let argv = argv(&["--frobnicate"]);
        let cmd = cmd();
        let err = cmd.clone().try_get_matches_from(&argv).unwrap_err();
        let before = err.to_string();
        assert_eq!(explain(err, &cmd, &argv, None).to_string(), before);
    }
}
