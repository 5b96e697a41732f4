//! The `breeze` binary against a real in-process server, as a user or a script runs it.

mod common;

use breeze_core::config::DuplicateLogin;
use breeze_testsupport::Pki;
use common::{ADMIN, TestServer, password, stderr, stdout, text, wait_output};
use std::io::Write;
use std::process::Stdio;

#[test]
fn register_refuses_a_taken_name_with_one_line() {
    let server = TestServer::start();
    server.register("alice");
    let out = server.run(&["register", "--user", "alice", "--password", "another-one"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "breeze: the user name alice is taken\n");
    assert_eq!(stdout(&out), "");

    let out = server.run(&["register", "--user", "bob", "--password", "short"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "breeze: cannot register: invalid password (8 to 1024 bytes)\n"
    );
}

#[test]
fn a_message_sent_to_an_offline_user_is_printed_at_their_login() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");

    let out = server.send("bob", "alice", "are you there?");
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.starts_with("sent to alice (seq ") && printed.ends_with(")\n"),
        "{printed:?}"
    );

    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");
    // The count comes first, then the messages.
    alice.expect("1 offline message:");
    alice.expect("bob: are you there?");
    alice.type_line("/quit");
    alice.expect("logged out");
    let (status, err) = alice.exit();
    assert!(status.success(), "{err}");

    // A one-shot login leaves the user's waiting messages in the mailbox for their chat.
    assert!(server.send("alice", "bob", "yes, here").status.success());
    let out = server.send("bob", "alice", "good");
    assert!(out.status.success());
    assert_eq!(stderr(&out), "");
    let mut bob = server.chat("bob", &[]);
    bob.expect("1 offline message:");
    bob.expect("alice: yes, here");
    bob.type_line("/quit");
    bob.expect("logged out");
    let (status, err) = bob.exit();
    assert!(status.success(), "{err}");

    // Alice's chat acked what it printed: only the newer message waits for her.
    let mut alice = server.chat("alice", &[]);
    alice.expect("1 offline message:");
    alice.expect("bob: good");
    assert!(
        !alice.seen.iter().any(|l| l.contains("are you there?")),
        "{:#?}",
        alice.seen
    );
    alice.type_line("/quit");
    alice.expect("logged out");
    let (status, err) = alice.exit();
    assert!(status.success(), "{err}");
}

#[test]
fn help_explains_the_flags() {
    let server = TestServer::start();
    let out = common::run(server.breeze(&["--help"]));
    assert!(out.status.success());
    for word in ["register", "chat", "send", "admin"] {
        assert!(stdout(&out).contains(word), "{}", stdout(&out));
    }
    let out = common::run(server.breeze(&["send", "--help"]));
    for flag in [
        "--server",
        "BREEZE_SERVER",
        "--user",
        "BREEZE_PASSWORD",
        "--to",
        "--timeout",
    ] {
        assert!(stdout(&out).contains(flag), "{}", stdout(&out));
    }
}

/// A value refused from the environment names the variable, not only the flag nobody typed,
/// and what a good value looks like.
#[test]
fn a_bad_environment_variable_is_named_with_the_format_expected() {
    let server = TestServer::start();
    let mut send = server.breeze(&["send", "--to", "bob", "hi"]);
    send.env("BREEZE_USER", "b@d");
    let out = common::run(send);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: invalid value 'b@d' for BREEZE_USER (environment; flag --user): expected a \
         user name: 1 to 32 of A-Z a-z 0-9 _ - . not starting with . or - (user name may \
         only contain letters, digits, '_', '-' and '.')\n"
    );
    let out = server.run(&["chat", "--user", "alice", "--status", "asleep"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: invalid value 'asleep' for --status: expected one of online, busy, away, \
         invisible\n"
    );
}

#[test]
fn two_chats_talk_and_a_quit_greys_the_user_out() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");

    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");
    let mut bob = server.chat("bob", &["--status", "busy"]);
    bob.expect("logged in as bob (busy)");
    alice.expect("bob is now busy");

    bob.type_line("/msg alice hello from bob");
    alice.expect("bob: hello from bob");
    alice.type_line("/msg bob hi bob");
    bob.expect("alice: hi bob");

    bob.type_line("/status online");
    alice.expect("bob is now online");

    bob.type_line("/quit");
    bob.expect("logged out");
    let (status, err) = bob.exit();
    assert!(status.success(), "{err}");
    alice.expect("bob is now offline");
    // One line per change; the whole list only at login and on /who.
    let lists = alice
        .seen
        .iter()
        .filter(|l| l.starts_with("users:"))
        .count();
    assert_eq!(lists, 1, "{:?}", alice.seen);

    alice.type_line("/history bob");
    alice.expect("last 2 messages with bob:");
    alice.expect("bob → you: hello from bob");
    alice.expect("you → bob: hi bob");
}

#[test]
fn a_wrong_password_fails_with_one_line() {
    let server = TestServer::start();
    server.register("alice");

    let out = server.run(&[
        "send",
        "--user",
        "alice",
        "--password",
        "not-her-password",
        "--to",
        "alice",
        "x",
    ]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "breeze: wrong user name or password\n");

    // The chat, with its input still open, gives up on its own.
    let mut chat = server.chat("alice", &["--password", "not-her-password"]);
    chat.expect("connecting to");
    let (status, err) = chat.exit();
    assert!(!status.success());
    assert_eq!(err, "breeze: wrong user name or password");
}

#[test]
fn a_second_login_kicks_the_first_chat_out() {
    let server = TestServer::start();
    server.register("alice");
    let mut first = server.chat("alice", &[]);
    first.expect("logged in as alice");
    let mut second = server.chat("alice", &[]);
    second.expect("logged in as alice");
    let (status, err) = first.exit();
    assert!(!status.success());
    assert_eq!(err, "breeze: kicked: logged in from another place");
}

#[test]
fn admin_who_lists_sessions_for_an_admin_only() {
    let server = TestServer::start();
    server.register(ADMIN);
    server.register("alice");
    let mut alice = server.chat("alice", &["--status", "away"]);
    alice.expect("logged in as alice");

    let out = server.admin_who(ADMIN);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("USER") && lines[0].ends_with("IDLE"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("alice") && l.contains("away")),
        "{table}"
    );
    // The query's own login is an agent's: not a session of root's, so root is not online.
    assert!(!lines.iter().any(|l| l.starts_with("root")), "{table}");
    // Connections of the registrations may still be closing: count only the users.
    assert!(
        lines.last().unwrap().starts_with("1 user online, "),
        "{table}"
    );

    let out = server.admin_who("alice");
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "breeze: not allowed: alice is not an administrator of this server\n"
    );
}

#[test]
fn no_server_and_no_password_are_clear_errors() {
    let server = TestServer::start();
    let closed = common::closed_port();
    let out = common::run(server.breeze(&[
        "register",
        "--user",
        "alice",
        "--password",
        "long-enough",
        "--server",
        &closed.to_string(),
    ]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("breeze: cannot connect to {closed}: "))
            && err.lines().count() == 1,
        "{err}"
    );

    // `chat` too gives up at once when it never got in, rather than retry forever.
    let chat = server.chat("alice", &["--server", &closed.to_string()]);
    let (status, err) = chat.exit();
    assert!(!status.success());
    assert!(
        err.starts_with(&format!("breeze: cannot connect to {closed}: ")),
        "{err}"
    );

    // Several servers: one that is down is skipped; only when all are is it an error.
    let both = format!("{closed}, {}", server.addr);
    let out = server.run(&[
        "register",
        "--user",
        "alice",
        "--password",
        "long-enough",
        "--server",
        &both,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.run(&[
        "send",
        "--user",
        "alice",
        "--password",
        "long-enough",
        "--to",
        "alice",
        "note",
        "--server",
        &format!("{closed},{closed}"),
    ]);
    let err = stderr(&out);
    assert!(
        !out.status.success()
            && err.starts_with(&format!("breeze: cannot connect to {closed}: "))
            && err.ends_with("(and every other server in --server)\n"),
        "{err}"
    );

    // Not a terminal, no password: refuse rather than hang on a prompt.
    let out = server.run(&["send", "--user", "alice", "--to", "bob", "hi"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("breeze: no password"),
        "{}",
        stderr(&out)
    );
}

/// With nobody reading its stderr a failed command still exits with the failure's status, 1,
/// not a panic's 101: a script sees the same failure either way.
#[test]
fn a_failure_nobody_reads_still_exits_one() {
    let server = TestServer::start();
    let closed = common::closed_port();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = server
        .breeze(&["register", "--user", "alice", "--password", "long-enough"])
        .args(["--server", &closed.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1));
}

#[test]
fn a_message_typed_before_login_is_sent_before_quit() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");
    // Typed at once, before the login can have happened, and the input closed.
    let mut alice = server.chat("alice", &[]);
    alice.type_line("/msg bob written early");
    alice.type_line("/quit");
    alice.expect("queued until logged in");
    alice.expect("logged out");
    let (status, err) = alice.exit();
    assert!(status.success(), "{err}");

    let mut bob = server.chat("bob", &[]);
    bob.expect("1 offline message:");
    bob.expect("alice: written early");
}

#[test]
fn tls_flags_pin_the_servers_certificate() {
    let pki = Pki::new();
    let (cert, stranger) = (&pki.cert, &pki.stranger);
    let files = breeze_server::TlsFiles {
        cert: cert.clone(),
        key: pki.key.clone(),
    };
    let server = TestServer::start_with(|s| s.tls = Some(files));
    let pw = password("tina");
    let register = |extra: &[&str]| {
        let mut args = vec!["register", "--user", "tina", "--password", &pw];
        args.extend_from_slice(extra);
        server.run(&args)
    };
    // Each failure in one line that says what failed.
    let fails_saying = |extra: &[&str], words: &str| {
        let out = register(extra);
        assert!(!out.status.success(), "{extra:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(words), "{extra:?}: {err}");
    };
    let (ca, stranger) = (pki.ca.to_str().unwrap(), stranger.to_str().unwrap());
    fails_saying(&["--tls-pin", stranger], "is not the pinned one");
    fails_saying(&["--tls-ca", stranger], "not signed by the CA of --tls-ca");
    fails_saying(
        &["--tls-ca", ca, "--tls-name", "elsewhere.example"],
        "not valid for the name dialled",
    );
    fails_saying(&[], "needs --tls-ca or --tls-pin");
    let plain = TestServer::start();
    let out = plain.run(&[
        "register",
        "--user",
        "tina",
        "--password",
        &pw,
        "--tls-pin",
        &cert.to_string_lossy(),
    ]);
    assert!(
        stderr(&out).contains("did not answer in TLS"),
        "{}",
        stderr(&out)
    );

    // The name checked is the host of --server when it is one (the certificate is for
    // localhost), not the address it resolved to.
    let by_name = format!("localhost:{}", server.addr.port());
    let out = register(&["--tls-ca", ca, "--server", &by_name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "registered tina\n");
}

/// The README's script example while the user chats. `send` and `admin who` log in as agents
/// (PROTOCOL.md §10.5): under either duplicate-login policy the user's chat is neither kicked,
/// greyed nor re-statused, and watchers see no change at all.
#[test]
fn scripts_and_admin_queries_leave_a_users_chat_alone() {
    for policy in [DuplicateLogin::Replace, DuplicateLogin::Multi] {
        let server = TestServer::start_with(|s| s.server.duplicate_login = policy);
        server.register(ADMIN);
        server.register("alice");
        server.register("bob");
        let mut alice = server.chat("alice", &[]);
        alice.expect("logged in as alice");
        let mut bob = server.chat("bob", &["--status", "busy"]);
        bob.expect("logged in as bob (busy)");
        alice.expect("bob is now busy");
        let mut admin = server.chat(ADMIN, &[]);
        admin.expect("logged in as root");
        alice.expect("root is now online");
        let before = alice.seen.len();

        let out = server.send("bob", "alice", "see you at 5");
        assert!(out.status.success(), "{policy:?}: {}", text(&out));
        alice.expect("bob: see you at 5");

        let out = server.admin_who(ADMIN);
        assert!(out.status.success(), "{policy:?}: {}", text(&out));
        let table = stdout(&out);
        for (name, status) in [("bob", "busy"), ("root", "online"), ("alice", "online")] {
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with(name) && l.contains(status)),
                "{policy:?}: {name} {status}\n{table}"
            );
        }

        // Both chats are still up and still themselves: a message each way.
        bob.type_line("/msg alice still here");
        alice.expect("bob: still here");
        admin.type_line("/msg alice me too");
        alice.expect("root: me too");
        let after = &alice.seen[before..];
        assert!(
            !after.iter().any(|l| l.contains(" is now ")),
            "{policy:?}: a watcher saw a presence change: {after:?}"
        );
    }
}

/// `send -` takes the body from standard input; an empty body is refused before connecting.
#[test]
fn send_reads_the_body_from_stdin_and_refuses_an_empty_one() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");
    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");

    let mut child = server
        .breeze(&["send", "--user", "bob", "--to", "alice", "-"])
        .env("BREEZE_PASSWORD", password("bob"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"piped from a script\n").unwrap();
    drop(stdin);
    let out = wait_output(child);
    assert!(out.status.success(), "{}", text(&out));
    alice.expect("bob: piped from a script");

    for empty in ["", "   "] {
        let out = server.send("bob", "alice", empty);
        assert!(!out.status.success());
        assert_eq!(
            stderr(&out),
            "breeze: the message is empty: nothing to send\n"
        );
    }
}

/// `/open bob`: plain lines then go to bob until `/close`; without a conversation open a
/// plain line is refused with what to type instead.
#[test]
fn an_open_conversation_takes_plain_lines() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");
    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");
    let mut bob = server.chat("bob", &[]);
    bob.expect("logged in as bob");
    alice.type_line("just words");
    alice.expect("not a command: /open USER");
    alice.type_line("/open bob");
    alice.expect("talking to bob");
    alice.type_line("hello without a command");
    bob.expect("alice: hello without a command");
    alice.type_line("/close");
    alice.expect("no longer talking to bob");
    alice.type_line("lost words");
    alice.expect("not a command: /open USER");
}

/// A body over the server's limit is refused naming the limit, not just "too large".
#[test]
fn an_oversize_message_is_refused_with_the_limit() {
    let server = TestServer::start();
    server.register("alice");
    let body = "x".repeat(20_000);
    let out = server.send("alice", "alice", &body);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("too large (this server takes bodies of at most 16384 bytes"),
        "{err}"
    );
}

/// `breeze admin kick` ends a user's chat with the reason, and the admin's own chat (the
/// command logs in as an agent) stays; `ban` does the same and keeps the user out, scripts
/// included, until `unban`. Only admins may, and only on registered users.
#[test]
fn an_admin_kicks_and_bans_a_chat_and_keeps_their_own() {
    let server = TestServer::start();
    server.register(ADMIN);
    server.register("alice");
    server.register("bob");
    let mut admin = server.chat(ADMIN, &[]);
    admin.expect("logged in as root");
    let mut bob = server.chat("bob", &[]);
    bob.expect("logged in as bob");
    admin.expect("bob is now online");

    let out = server.admin(ADMIN, &["kick", "bob"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "kicked bob (1 session ended)\n");
    let (status, err) = bob.exit();
    assert!(!status.success());
    assert_eq!(err, "breeze: disconnected: removed by an administrator");
    admin.expect("bob is now offline");

    // A kick is not a ban: bob comes back, and the admin's chat, still up, sees it.
    let mut bob = server.chat("bob", &[]);
    bob.expect("logged in as bob");
    admin.expect("bob is now online");
    let out = server.admin(ADMIN, &["ban", "bob"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).starts_with("banned bob (1 session ended)"),
        "{}",
        text(&out)
    );
    let (status, err) = bob.exit();
    assert!(!status.success());
    assert_eq!(
        err,
        "breeze: disconnected: removed by an administrator: the account is banned"
    );
    admin.expect("bob is now offline");
    let send = |server: &TestServer| server.send("bob", "alice", "let me in");
    let out = send(&server);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "breeze: cannot log in: this account is banned by an administrator\n"
    );

    let out = server.admin(ADMIN, &["unban", "bob"]);
    assert_eq!(stdout(&out), "unbanned bob\n", "{}", text(&out));
    let out = send(&server);
    assert!(out.status.success(), "{}", text(&out));

    let out = server.admin("alice", &["kick", "bob"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out),
        "breeze: not allowed: alice is not an administrator of this server\n"
    );
    let out = server.admin(ADMIN, &["ban", "ghost"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out), "breeze: there is no user ghost\n");

    // Through all of it the admin's own chat stayed: a message still goes out from it.
    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");
    admin.type_line("/msg alice all done");
    alice.expect("root: all done");
}

/// `/send-file` and `/accept` between two chats: the offer, the way it goes, a line per
/// tenth, and the file saved whole in `--downloads`.
#[test]
fn two_chats_send_a_file_directly() {
    let server = TestServer::start();
    server.register("alice");
    server.register("bob");
    let dir = tempfile::tempdir().unwrap();
    let downloads = dir.path().join("bob");
    std::fs::create_dir(&downloads).unwrap();
    let source = dir.path().join("相册 2024.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(&source, &data).unwrap();

    let mut alice = server.chat("alice", &[]);
    alice.expect("logged in as alice");
    let mut bob = server.chat("bob", &["--downloads", downloads.to_str().unwrap()]);
    bob.expect("logged in as bob");

    alice.type_line(&format!("/send-file bob {}", source.display()));
    alice.expect("offering 相册 2024.bin to bob");
    bob.expect("alice offers 相册 2024.bin (3.0 MiB): /accept alice or /decline alice");
    bob.type_line("/accept");
    bob.expect("相册 2024.bin: going directly");
    bob.expect("相册 2024.bin: done, hash checked");
    alice.expect("bob accepted 相册 2024.bin");
    alice.expect("相册 2024.bin: done, hash checked");
    assert_eq!(
        std::fs::read(downloads.join("相册 2024.bin")).unwrap(),
        data
    );

    bob.type_line("/accept");
    bob.expect("no file is offered to you right now");
}
