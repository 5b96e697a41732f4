//! Where the chat's lines go: straight to standard output, or, while the line editor owns the
//! terminal, above the line being typed (the editor clears it, prints, and draws it again), or
//! nowhere yet while a password is being typed (they are held and printed after it).
//!
//! Every line the chat prints goes through one `Screen`, shared with the input thread, so that
//! nothing else writes into the line being edited or a password prompt.

use rustyline::ExternalPrinter;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

/// Prints lines from any thread; clones share one terminal.
#[derive(Clone, Default)]
pub struct Screen {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Screen")
            .field("editor", &inner.editor.is_some())
            .field("held", &inner.held.as_ref().map(Vec::len))
            .finish()
    }
}

#[derive(Default)]
struct Inner {
    /// The line editor's printer while it owns the terminal; `None`: standard output.
    editor: Option<Editor>,
    /// Lines held while a password is typed; `None` when not holding.
    held: Option<Vec<String>>,
}

struct Editor {
    printer: Box<dyn ExternalPrinter + Send>,
    /// The terminal's mode before the editor changed it, put back by `detach`.
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl Screen {
    /// Prints one line: held, above the edited line, or on standard output (flushed).
    pub fn line(&self, text: &str) -> std::io::Result<()> {
        let mut inner = self.lock();
        if let Some(held) = &mut inner.held {
            held.push(text.to_string());
            return Ok(());
        }
        inner.write(text)
    }

    /// From now on lines go above the line editor's prompt. `saved` is the terminal's mode
    /// from before the editor started, for `detach`.
    pub fn attach(
        &self,
        printer: Box<dyn ExternalPrinter + Send>,
        #[cfg(unix)] saved: Option<nix::sys::termios::Termios>,
    ) {
        self.lock().editor = Some(Editor {
            printer,
            #[cfg(unix)]
            saved,
        });
    }

    /// Back to standard output, with the terminal as it was before the editor: the chat is
    /// ending while the editor's thread may still be in the middle of a line, and the process
    /// exits without it putting the terminal back. Held lines are printed. Idempotent.
    pub fn detach(&self) {
        let mut inner = self.lock();
        if let Some(editor) = inner.editor.take() {
            #[cfg(unix)]
            if let Some(saved) = &editor.saved {
                use nix::sys::termios::{SetArg, tcsetattr};
                let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
                // The abandoned prompt and whatever was typed after it are wiped, and
                // bracketed paste (switched on by the editor) off again for the shell.
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[K\x1b[?2004l");
                let _ = out.flush();
            }
            // Elsewhere the editor's terminal handling is left to it.
            #[cfg(not(unix))]
            drop(editor);
        }
        inner.release();
    }

    /// Holds every line until the guard is dropped: for a password prompt, which must not
    /// get a message printed into it.
    pub fn hold(&self) -> Hold<'_> {
        let mut inner = self.lock();
        if inner.held.is_none() {
            inner.held = Some(Vec::new());
        }
        Hold { screen: self }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while printing leaves nothing half-changed worth refusing to print over.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn write(&mut self, text: &str) -> std::io::Result<()> {
        match &mut self.editor {
            Some(editor) => editor
                .printer
                .print(format!("{text}\n"))
                .map_err(std::io::Error::other),
            None => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}")?;
                out.flush()
            }
        }
    }

    /// Prints the held lines, in order, and stops holding.
    fn release(&mut self) {
        for text in self.held.take().unwrap_or_default() {
            let _ = self.write(&text);
        }
    }
}

/// Lines are held while this lives.
#[derive(Debug)]
pub struct Hold<'a> {
    screen: &'a Screen,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.screen.lock().release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what would reach the line editor.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<String>>>);

    impl ExternalPrinter for Collect {
        fn print(&mut self, msg: String) -> rustyline::Result<()> {
            self.0.lock().unwrap().push(msg);
            Ok(())
        }
    }

    impl Collect {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    fn attached() -> (Screen, Collect) {
        let screen = Screen::default();
        let seen = Collect::default();
        screen.attach(
            Box::new(seen.clone()),
            #[cfg(unix)]
            None,
        );
        (screen, seen)
    }

    #[test]
    fn lines_go_to_the_editor_whole_while_it_owns_the_terminal() {
        let (screen, seen) = attached();
        let other = screen.clone();
        screen.line("alice: hi").unwrap();
        other.line("bob is now online").unwrap();
        assert_eq!(seen.take(), ["alice: hi\n", "bob is now online\n"]);
    }

    #[test]
    fn nothing_is_printed_during_a_password_prompt_and_all_of_it_after() {
        let (screen, seen) = attached();
        screen.line("before").unwrap();
        {
            let _hold = screen.hold();
            // As from the chat's thread while the input thread asks for the password.
            let chat = screen.clone();
            std::thread::spawn(move || {
                chat.line("alice: one").unwrap();
                chat.line("alice: two").unwrap();
            })
            .join()
            .unwrap();
            assert_eq!(
                seen.take(),
                ["before\n"],
                "nothing while the password is typed"
            );
        }
        assert_eq!(seen.take(), ["alice: one\n", "alice: two\n"]);
        screen.line("after").unwrap();
        assert_eq!(seen.take(), ["after\n"]);
    }
}
