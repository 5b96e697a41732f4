//! Where the chat's lines go: straight to standard output, or, while the line editor owns the
//! terminal, above the line being typed (the editor clears it, prints, and draws it again).
//!
//! Every line the chat prints goes through one `Screen`, shared with the input thread, so that
//! nothing else writes into the line being edited or a password prompt (the editor asks for
//! passwords itself, masked, so they are edited lines too).
//!
//! While the editor owns the terminal, lines are handed to it by a thread of their own: the
//! editor's printer takes one line at a time and blocks on the next until the editor reads it,
//! which it only does while a line is being read. The chat's network task once printed
//! through it directly, and a burst of lines arriving just as Enter was pressed blocked that
//! task — and, through the screen's lock, the input thread — for good (seen in `gdb`: the
//! chat thread in `SyncSender::send` inside rustyline's printer, the input thread waiting
//! for the lock). Now nothing that prints ever waits for the terminal.

use rustyline::ExternalPrinter;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long `detach` waits for the printer thread to hand over the lines still queued. It
/// only waits while the editor is between two lines, which takes microseconds; the bound is
/// for a printer that never returns.
const DRAIN: Duration = Duration::from_secs(1);

/// Prints lines from any thread; clones share one terminal.
#[derive(Clone, Default)]
pub struct Screen {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a line is queued, when the printer thread finishes one, and at detach.
    changed: Condvar,
}

impl std::fmt::Debug for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Screen")
            .field("editor", &state.editor.is_some())
            .field("queued", &state.queue.len())
            .finish()
    }
}

#[derive(Default)]
struct State {
    /// Set while the line editor owns the terminal; `None`: standard output.
    editor: Option<Editor>,
    /// Lines for the printer thread, oldest first.
    queue: VecDeque<String>,
    /// The printer thread is handing a line to the editor.
    busy: bool,
}

struct Editor {
    /// The terminal's mode before the editor changed it, put back by `detach`.
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

impl Screen {
    /// Prints one line: above the edited line (queued for the printer thread), or on standard
    /// output (flushed). Never waits for the line editor.
    pub fn line(&self, text: &str) -> std::io::Result<()> {
        let mut state = self.lock();
        if state.editor.is_some() {
            state.queue.push_back(text.to_string());
            self.shared.changed.notify_all();
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
        out.flush()
    }

    /// From now on lines go above the line editor's prompt, handed to `printer` by a thread
    /// of their own. `saved` is the terminal's mode from before the editor started, for
    /// `detach`.
    pub fn attach(
        &self,
        printer: Box<dyn ExternalPrinter + Send>,
        #[cfg(unix)] saved: Option<nix::sys::termios::Termios>,
    ) -> std::io::Result<()> {
        // Set before the thread starts: it ends when it finds no editor and nothing queued.
        self.lock().editor = Some(Editor {
            #[cfg(unix)]
            saved,
        });
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("printer".into())
            .spawn(move || print_queued(&shared, printer));
        if let Err(e) = spawned {
            self.lock().editor = None;
            return Err(e);
        }
        Ok(())
    }

    /// Back to standard output, with the terminal as it was before the editor: the chat is
    /// ending while the editor's thread may still be in the middle of a line, and the process
    /// exits without it putting the terminal back. Lines still queued are printed first.
    /// Idempotent.
    pub fn detach(&self) {
        let mut state = self.lock();
        let deadline = Instant::now() + DRAIN;
        while !state.queue.is_empty() || state.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let Some(editor) = state.editor.take() else {
            return;
        };
        let mut out = std::io::stdout().lock();
        #[cfg(unix)]
        if let Some(saved) = &editor.saved {
            use nix::sys::termios::{SetArg, tcsetattr};
            let _ = tcsetattr(std::io::stdin(), SetArg::TCSADRAIN, saved);
            // The abandoned prompt and whatever was typed after it are wiped, and
            // bracketed paste (switched on by the editor) off again for the shell.
            let _ = write!(out, "\r\x1b[K\x1b[?2004l");
        }
        #[cfg(not(unix))]
        drop(editor);
        // Whatever the printer could not hand over in time goes straight out, in order.
        for text in state.queue.drain(..) {
            let _ = writeln!(out, "{text}");
        }
        let _ = out.flush();
        self.shared.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while printing leaves nothing half-changed worth refusing to print over.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The printer thread: hands queued lines to the editor one at a time, oldest first, until
/// the screen is detached and nothing is left.
fn print_queued(shared: &Shared, mut printer: Box<dyn ExternalPrinter + Send>) {
    let lock = || shared.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let text = {
            let mut state = lock();
            loop {
                if let Some(text) = state.queue.pop_front() {
                    state.busy = true;
                    break text;
                }
                if state.editor.is_none() {
                    return;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
        };
        // An error (the editor gone) loses nothing worse than this line; `detach` prints
        // what is still queued.
        let _ = printer.print(format!("{text}\n"));
        lock().busy = false;
        shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

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

    fn attach(printer: impl ExternalPrinter + Send + 'static) -> Screen {
        let screen = Screen::default();
        screen
            .attach(
                Box::new(printer),
                #[cfg(unix)]
                None,
            )
            .unwrap();
        screen
    }

    #[test]
    fn lines_go_to_the_editor_whole_and_in_order_while_it_owns_the_terminal() {
        let seen = Collect::default();
        let screen = attach(seen.clone());
        let other = screen.clone();
        screen.line("alice: hi").unwrap();
        other.line("bob is now online").unwrap();
        screen.detach();
        assert_eq!(seen.take(), ["alice: hi\n", "bob is now online\n"]);
    }

    /// A printer that takes a line only when told to, as rustyline's takes one only while
    /// the editor is reading a line.
    struct Gated {
        open: mpsc::Receiver<()>,
        seen: Collect,
    }

    impl ExternalPrinter for Gated {
        fn print(&mut self, msg: String) -> rustyline::Result<()> {
            let _ = self.open.recv_timeout(WAIT_LIMIT);
            self.seen.0.lock().unwrap().push(msg);
            Ok(())
        }
    }

    const WAIT_LIMIT: Duration = Duration::from_secs(10);

    #[test]
    fn printing_never_waits_for_the_editor_to_take_a_line() {
        let seen = Collect::default();
        let (open, gate) = mpsc::channel();
        let screen = attach(Gated {
            open: gate,
            seen: seen.clone(),
        });
        // From the chat's thread: three lines while the editor takes none.
        let chat = screen.clone();
        let (done, printed) = mpsc::channel();
        std::thread::spawn(move || {
            for text in ["one", "two", "three"] {
                chat.line(text).unwrap();
            }
            let _ = done.send(());
        });
        printed
            .recv_timeout(WAIT_LIMIT)
            .expect("a line waited for the editor");
        assert!(seen.take().is_empty());
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        screen.detach();
        assert_eq!(seen.take(), ["one\n", "two\n", "three\n"]);
    }
}
