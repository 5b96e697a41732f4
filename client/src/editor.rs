//! The line editor of `breeze chat` on a terminal: editing keys, history (up and down, kept in
//! a file under the user's data folder), and Tab completion of the commands, their words and
//! the user names the chat knows. Lines the chat prints while one is being typed appear above
//! it (`Screen`). `/passwd` asks for the passwords as edited lines too, masked: the editor
//! never lets go of the terminal, so a line the chat prints meanwhile appears above the
//! password prompt like any other, never inside it.

use crate::input::{COMMANDS, Input};
use crate::screen::Screen;
use breeze_core::UserId;
use rustyline::completion::{Completer, Pair};
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;
use rustyline::highlight::CmdKind;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{ColorMode, CompletionType, Config, Context, Editor};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

const PROMPT: &str = "> ";
/// Lines kept in the history.
const HISTORY_SIZE: usize = 1000;
/// Names the history file instead of the one in the data folder; empty keeps the history in
/// memory only.
pub const HISTORY_ENV: &str = "BREEZE_HISTORY_FILE";

/// The user names the chat has seen (presence list, contacts), for completion. Shared by the
/// chat, which adds to it, and the editor's thread.
#[derive(Debug, Clone, Default)]
pub struct Names(Arc<Mutex<BTreeSet<UserId>>>);

impl Names {
    pub fn add<'a>(&self, names: impl IntoIterator<Item = &'a UserId>) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(names.into_iter().cloned());
    }

    fn snapshot(&self) -> BTreeSet<UserId> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The editor's completion, and the mask over a password being typed; no hints or
/// multi-line validation.
#[derive(Debug)]
struct ChatHelper {
    names: Names,
    /// A password is being typed: shown as `*`, nothing completed.
    masking: bool,
}

impl Completer for ChatHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        if self.masking {
            return Ok((pos, Vec::new()));
        }
        Ok(complete(line, pos, &self.names.snapshot()))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        if self.masking {
            // One `*` per column, so that the cursor the editor places stays where it is.
            Cow::Owned("*".repeat(unicode_width::UnicodeWidthStr::width(line)))
        } else {
            Cow::Borrowed(line)
        }
    }

    fn highlight_char(&self, _line: &str, _pos: usize, kind: CmdKind) -> bool {
        self.masking && kind != CmdKind::MoveCursor
    }
}
impl Validator for ChatHelper {}
impl rustyline::Helper for ChatHelper {}

/// What the word before the cursor may become: the byte where that word starts, and the
/// candidates. A command (`/op` → `/open `), a command's fixed word (`/status b` → `busy`),
/// or a user name where the command takes one and anywhere in a plain line.
pub fn complete(line: &str, pos: usize, names: &BTreeSet<UserId>) -> (usize, Vec<Pair>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| {
        i + before[i..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &before[start..];
    let previous: Vec<&str> = before[..start].split_whitespace().collect();
    let pairs = match previous.first() {
        None if word.starts_with('/') => COMMANDS
            .iter()
            .filter(|(name, _)| format!("/{name}").starts_with(word))
            .map(|(name, takes_args)| {
                let space = if *takes_args { " " } else { "" };
                pair(&format!("/{name}"), space)
            })
            .collect(),
        Some(command) if command.starts_with('/') => match argument(command, &previous[1..]) {
            Some(Argument::User) => users(word, names),
            Some(Argument::Word(words)) => words
                .iter()
                .filter(|w| w.starts_with(&word.to_ascii_lowercase()))
                .map(|w| pair(w, " "))
                .collect(),
            None => Vec::new(),
        },
        // A plain line: a message, which may well name someone.
        _ => users(word, names),
    };
    (start, pairs)
}

/// What a command's next word is, given the words after the command so far.
enum Argument {
    User,
    Word(&'static [&'static str]),
}

fn argument(command: &str, after: &[&str]) -> Option<Argument> {
    match (command, after) {
        (
            "/msg" | "/m" | "/open" | "/o" | "/history" | "/whois" | "/send-file" | "/accept"
            | "/decline",
            [],
        ) => Some(Argument::User),
        ("/profile", []) => Some(Argument::Word(&["name", "sign", "avatar"])),
        ("/status", []) => Some(Argument::Word(&["online", "busy", "away", "invisible"])),
        ("/contacts", []) => Some(Argument::Word(&["add", "remove"])),
        ("/contacts", ["add" | "remove" | "rm"]) => Some(Argument::User),
        _ => None,
    }
}

/// The names starting with `prefix`; names are lowercase, so any case typed matches.
fn users(prefix: &str, names: &BTreeSet<UserId>) -> Vec<Pair> {
    if prefix.is_empty() && names.len() > 100 {
        // A Tab on nothing in a big team lists nobody rather than a screenful.
        return Vec::new();
    }
    let prefix = prefix.to_ascii_lowercase();
    names
        .iter()
        .filter(|n| n.as_str().starts_with(&prefix))
        .map(|n| pair(n.as_str(), " "))
        .collect()
}

fn pair(word: &str, after: &str) -> Pair {
    Pair {
        display: word.to_string(),
        replacement: format!("{word}{after}"),
    }
}

/// Reads lines with the editor on a thread of its own, sending them to `tx`, until end of
/// input (Ctrl-D) or Ctrl-C. `Err` when the terminal cannot be edited on; the caller then
/// reads plain lines.
pub fn spawn(tx: mpsc::Sender<Input>, screen: &Screen, names: &Names) -> Result<(), String> {
    let config = Config::builder()
        .auto_add_history(true)
        .history_ignore_space(true)
        .history_ignore_dups(true)
        .and_then(|c| c.max_history_size(HISTORY_SIZE))
        .map_err(|e| e.to_string())?
        .completion_type(CompletionType::List)
        .build();
    #[cfg(unix)]
    let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
    let mut editor: Editor<ChatHelper, DefaultHistory> =
        Editor::with_config(config).map_err(|e| e.to_string())?;
    editor.set_helper(Some(ChatHelper {
        names: names.clone(),
        masking: false,
    }));
    let printer = editor
        .create_external_printer()
        .map_err(|e| e.to_string())?;
    let history = history_file();
    if let Some(path) = &history
        && let Err(e) = load(&mut editor, path)
    {
        let _ = screen.line(&format!(
            "! history not kept in {}: {e} ({HISTORY_ENV}= keeps it in memory only)",
            path.display()
        ));
    }
    screen
        .attach(
            Box::new(printer),
            #[cfg(unix)]
            saved,
        )
        .map_err(|e| format!("cannot start the printer thread: {e}"))?;
    let screen = screen.clone();
    std::thread::Builder::new()
        .name("editor".into())
        .spawn(move || read(editor, history, &tx, &screen))
        .map(drop)
        .map_err(|e| format!("cannot start the input thread: {e}"))
}

fn read(
    mut editor: Editor<ChatHelper, DefaultHistory>,
    mut history: Option<PathBuf>,
    tx: &mpsc::Sender<Input>,
    screen: &Screen,
) {
    loop {
        let input = match editor.readline(PROMPT) {
            Ok(line) if line.trim() == "/passwd" => ask_passwords(&mut editor),
            Ok(line) => Input::Line(line),
            Err(ReadlineError::Interrupted) => Input::Quit,
            // End of input: the channel closes.
            Err(ReadlineError::Eof) => return,
            Err(e) => {
                let _ = screen.line(&format!("! cannot read the terminal: {e}"));
                return;
            }
        };
        // Appended line by line: the process ends without waiting for this thread.
        if let Some(path) = &history
            && let Err(e) = editor.append_history(path)
        {
            let _ = screen.line(&format!(
                "! history no longer kept in {}: {e}",
                path.display()
            ));
            history = None;
        }
        let quit = matches!(input, Input::Quit);
        if tx.blocking_send(input).is_err() || quit {
            return;
        }
    }
}

/// Asks for the old password and the new one twice, as masked lines of the editor, kept out
/// of the history.
fn ask_passwords(editor: &mut Editor<ChatHelper, DefaultHistory>) -> Input {
    set_masking(editor, true);
    let asked = (|| {
        let old = editor.readline("old password: ")?;
        let new = editor.readline("new password: ")?;
        let again = editor.readline("new password again: ")?;
        Ok::<_, ReadlineError>((old, new, again))
    })();
    set_masking(editor, false);
    match asked {
        Ok((_, new, again)) if new != again => {
            Input::PasswdFailed("/passwd: the new passwords do not match".into())
        }
        Ok((old, new, _)) => Input::Passwd { old, new },
        Err(ReadlineError::Interrupted | ReadlineError::Eof) => {
            Input::PasswdFailed("/passwd: cancelled; the password is unchanged".into())
        }
        Err(e) => Input::PasswdFailed(format!("/passwd: cannot read the password: {e}")),
    }
}

fn set_masking(editor: &mut Editor<ChatHelper, DefaultHistory>, on: bool) {
    if let Some(helper) = editor.helper_mut() {
        helper.masking = on;
    }
    editor.set_auto_add_history(!on);
    // The mask is drawn as highlighting, which the editor leaves out where colours are off
    // (`NO_COLOR`, or output that is not a terminal): forced on while a password is typed.
    editor.set_color_mode(if on {
        ColorMode::Forced
    } else {
        ColorMode::Enabled
    });
}

/// `$BREEZE_HISTORY_FILE`, else `breeze/history` in the data folder (`$XDG_DATA_HOME`, else
/// `~/.local/share`); `None` for memory only.
fn history_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(HISTORY_ENV) {
        return (!path.is_empty()).then(|| PathBuf::from(path));
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|home| Path::new(&home).join(".local/share"))
        })?;
    Some(data.join("breeze").join("history"))
}

/// Loads the history at `path`, making its folder (private: what was typed is in it) if
/// missing.
fn load(editor: &mut Editor<ChatHelper, DefaultHistory>, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    match editor.load_history(path) {
        Ok(()) => Ok(()),
        Err(ReadlineError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(std::io::Error::other(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> BTreeSet<UserId> {
        list.iter().map(|n| UserId::new(*n).unwrap()).collect()
    }

    /// The replacements offered with the cursor at the end of `line`, and where they start.
    fn at_end(line: &str, known: &BTreeSet<UserId>) -> (usize, Vec<String>) {
        let (start, pairs) = complete(line, line.len(), known);
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn commands_complete_with_a_space_when_they_take_words() {
        let none = BTreeSet::new();
        assert_eq!(at_end("/op", &none), (0, vec!["/open ".to_string()]));
        assert_eq!(at_end("/q", &none), (0, vec!["/quit".to_string()]));
        assert_eq!(
            at_end("/h", &none).1,
            ["/history ", "/help"],
            "every command that starts so, in /help's order"
        );
        assert_eq!(at_end("/", &none).1.len(), COMMANDS.len());
        assert!(at_end("/zz", &none).1.is_empty());
    }

    #[test]
    fn user_names_complete_where_a_command_takes_one() {
        let known = names(&["alice", "albert", "bob"]);
        assert_eq!(
            at_end("/open al", &known),
            (6, vec!["albert ".into(), "alice ".into()])
        );
        assert_eq!(at_end("/msg B", &known), (5, vec!["bob ".into()]));
        assert_eq!(at_end("/history  bo", &known).1, ["bob "]);
        assert_eq!(at_end("/contacts add a", &known).1, ["albert ", "alice "]);
        // Where the command takes no name, or a message's text begins, none is offered.
        assert!(at_end("/who a", &known).1.is_empty());
        assert!(at_end("/msg bob al", &known).1.is_empty());
        // A plain line is a message, which may name someone.
        assert_eq!(at_end("ask bo", &known), (4, vec!["bob ".into()]));
        // Before the cursor only: what follows it stays.
        let (start, pairs) = complete("/open al and more", 8, &known);
        assert_eq!((start, pairs.len()), (6, 2));
    }

    #[test]
    fn a_command_s_fixed_words_complete() {
        let none = BTreeSet::new();
        assert_eq!(at_end("/status b", &none).1, ["busy "]);
        assert_eq!(at_end("/status ", &none).1.len(), 4);
        assert_eq!(at_end("/contacts r", &none).1, ["remove "]);
    }

    #[test]
    fn names_seen_by_the_chat_reach_the_completion() {
        let shared = Names::default();
        let helper = ChatHelper {
            names: shared.clone(),
            masking: false,
        };
        assert!(
            complete("/open c", 7, &helper.names.snapshot())
                .1
                .is_empty()
        );
        shared.add(&names(&["carol"]));
        let (_, pairs) = complete("/open c", 7, &helper.names.snapshot());
        assert_eq!(pairs[0].replacement, "carol ");
    }

    #[test]
    fn a_word_after_a_multibyte_space_starts_after_it() {
        // U+3000, an ideographic space, is whitespace of three bytes.
        let known = names(&["bob"]);
        assert_eq!(at_end("hi\u{3000}b", &known), (5, vec!["bob ".into()]));
    }
}
