//! `breeze chat` on a terminal (a pseudo-terminal), typed into as a person would: the line
//! editor's guarantees, seen in the bytes the terminal is sent.
#![cfg(unix)]

mod common;

use common::{TerminalChat, TestServer, password, text};

/// A server with alice and bob, and alice's chat on a terminal, logged in, at its prompt.
fn alice_at_the_prompt() -> (TestServer, TerminalChat) {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");
    let mut alice = server.chat_on_terminal("alice");
    alice.expect("logged in as alice");
    alice.expect("> ");
    (server, alice)
}

#[test]
fn a_message_arriving_while_a_line_is_typed_is_printed_above_it() {
    let (server, mut alice) = alice_at_the_prompt();
    alice.type_keys("see you at");
    alice.expect("see you at");

    let out = server.send("bob", "alice", "are you coming?");
    assert!(out.status.success(), "{}", text(&out));
    let at = alice.expect("bob: are you coming?");
    let shown = alice.shown_before(at);
    assert!(
        !shown.contains("see you") && !shown.contains('>'),
        "the message shares a line with the one being typed: {shown:?}"
    );
    // The line being typed comes back below it, as it was.
    let at = alice.expect("see you at");
    assert_eq!(alice.shown_before(at), "> ");

    // Tab completes a name the chat has seen; the line then goes out as completed.
    alice.type_keys("\x15/open b\t");
    alice.expect("/open bob ");
    alice.type_keys("\r");
    alice.expect("talking to bob");
    // Ctrl-C is a key to the editor, and still logs out.
    alice.type_keys("\x03");
    alice.expect("logged out");
    assert!(alice.exit().success());
}

#[test]
fn a_message_arriving_during_a_password_prompt_is_printed_above_it_and_the_password_stays_hidden() {
    let (server, mut alice) = alice_at_the_prompt();
    alice.type_keys("/passwd\r");
    alice.expect("old password: ");
    let old = password("alice");
    let (typed, rest) = old.split_at(5);
    alice.type_keys(typed);
    alice.expect(&"*".repeat(typed.len()));

    let out = server.send("bob", "alice", "psst");
    assert!(out.status.success(), "{}", text(&out));
    let at = alice.expect("bob: psst");
    let shown = alice.shown_before(at);
    assert!(
        !shown.contains("password") && !shown.contains('*'),
        "the message shares a line with the password prompt: {shown:?}"
    );
    // The prompt comes back below it, masked as it was, and the password goes on from there.
    let at = alice.expect(&"*".repeat(typed.len()));
    assert_eq!(alice.shown_before(at), "old password: ");
    alice.type_keys(&format!("{rest}\r"));
    alice.expect("new password: ");
    alice.type_keys("another-password\r");
    alice.expect("new password again: ");
    alice.type_keys("another-password\r");
    alice.expect("password changed");
    let seen = String::from_utf8_lossy(&alice.seen).into_owned();
    // Typed in two parts around the message, and never drawn but as stars.
    for secret in [old.as_str(), rest, "another-password"] {
        assert!(!seen.contains(secret), "{secret:?} was shown: {seen:?}");
    }
    alice.type_keys("\x03");
    alice.expect("logged out");
    assert!(alice.exit().success());
}

#[test]
fn ctrl_c_at_a_password_prompt_cancels_the_change_and_the_chat_goes_on() {
    let (server, mut alice) = alice_at_the_prompt();
    alice.type_keys("/passwd\r");
    alice.expect("old password: ");
    alice.type_keys("wrong\x03");
    alice.expect("password is unchanged");
    let out = server.send("bob", "alice", "still there?");
    assert!(out.status.success(), "{}", text(&out));
    alice.expect("bob: still there?");
    alice.type_keys("\x03");
    alice.expect("logged out");
    assert!(alice.exit().success());
}
