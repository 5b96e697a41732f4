//! CPU time and resident memory of a process, from /proc.

use std::collections::BTreeMap;
use std::io;

/// /proc reports CPU times in USER_HZ ticks, which the kernel fixes at 100 per second on every
/// architecture Linux exposes to user space (`sysconf(_SC_CLK_TCK)`), whatever CONFIG_HZ is.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// User plus system CPU time, in ticks, from the text of `/proc/PID/stat`. The command name
/// (field 2) is in parentheses and may itself contain spaces and parentheses, so fields are
/// counted from the last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    parse_stat_line(stat).map(|line| line.ticks)
}

/// `VmRSS` in bytes, from the text of `/proc/PID/status`.
pub fn parse_vmrss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

fn path(pid: Option<u32>, file: &str) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}/{file}"),
        None => format!("/proc/self/{file}"),
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cannot parse {what}"))
}

/// CPU seconds (user + system, all threads) of `pid`, or of this process for `None`.
pub fn cpu_seconds(pid: Option<u32>) -> io::Result<f64> {
    let text = std::fs::read_to_string(path(pid, "stat"))?;
    let ticks = parse_stat_ticks(&text).ok_or_else(|| bad("stat"))?;
    Ok(ticks as f64 / TICKS_PER_SECOND)
}

/// On-CPU time of each thread of `pid`, in nanoseconds, keyed by thread id, from
/// `/proc/PID/task/*/schedstat`. `stat` counts whole 10 ms ticks, too coarse for a burst of
/// closes that is over in 10 ms; the scheduler's own account is exact.
pub fn thread_cpu_ns(pid: u32) -> io::Result<BTreeMap<u32, u64>> {
    let mut threads = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        // A thread that ended since the listing has no file left: it is simply not counted.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        threads.insert(
            tid,
            parse_schedstat_ns(&text).ok_or_else(|| bad("schedstat"))?,
        );
    }
    Ok(threads)
}

/// The first field of a `schedstat` file: time spent on a CPU, in nanoseconds.
pub fn parse_schedstat_ns(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

/// CPU the threads used between two `thread_cpu_ns` snapshots. A thread started in between
/// counts whole; one that ended in between is missing from `after` and its last moments are
/// lost (the server's threads live as long as it does).
pub fn cpu_ns_between(before: &BTreeMap<u32, u64>, after: &BTreeMap<u32, u64>) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}

/// What `/proc/PID/stat` says of one process: its command name, its parent, its own CPU ticks
/// and the ticks of the children it has reaped (`cutime + cstime`).
#[derive(Debug, PartialEq, Eq)]
pub struct StatLine<'a> {
    pub name: &'a str,
    pub ppid: u32,
    pub ticks: u64,
    pub reaped_ticks: u64,
}

pub fn parse_stat_line(stat: &str) -> Option<StatLine<'_>> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3, ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(StatLine {
        name,
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)?,
        reaped_ticks: field(16)? + field(17)?,
    })
}

/// CPU seconds of every process on this machine named `name` (as `/proc/PID/stat` gives it),
/// plus, for each whose parent has another name (a server's root process), the CPU of the
/// children it has reaped: differences over a window then count the processes that ended in
/// it too (a PostgreSQL backend whose connection closed). `None` if there is no such process.
pub fn cpu_seconds_named(name: &str) -> io::Result<Option<f64>> {
    let mut stats = BTreeMap::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // A process that ended since the listing has no file left: it is not counted.
        if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
            stats.insert(pid, text);
        }
    }
    let lines: BTreeMap<u32, StatLine<'_>> = stats
        .iter()
        .filter_map(|(&pid, text)| Some((pid, parse_stat_line(text)?)))
        .collect();
    let mut ticks = None;
    for line in lines.values().filter(|l| l.name == name) {
        let root = lines
            .get(&line.ppid)
            .is_none_or(|parent| parent.name != name);
        *ticks.get_or_insert(0) += line.ticks + if root { line.reaped_ticks } else { 0 };
    }
    Ok(ticks.map(|t| t as f64 / TICKS_PER_SECOND))
}

/// Resident set size of `pid` (or of this process), in bytes.
pub fn rss_bytes(pid: Option<u32>) -> io::Result<u64> {
    let text = std::fs::read_to_string(path(pid, "status"))?;
    parse_vmrss_bytes(&text).ok_or_else(|| bad("status"))
}

/// Where one process stood at one moment, for differences over a window.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub cpu_s: f64,
    pub rss: u64,
}

impl Sample {
    pub fn take(pid: Option<u32>) -> Option<Sample> {
        Some(Sample {
            cpu_s: cpu_seconds(pid).ok()?,
            rss: rss_bytes(pid).ok()?,
        })
    }
}

/// A counter from the `TcpExt` lines of `/proc/net/netstat` (a header line of names, then a
/// line of values), e.g. `ListenOverflows`: connections the kernel dropped because a
/// listener's accept queue was full.
pub fn parse_tcpext(netstat: &str, name: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?.split_whitespace().skip(1);
    let values = lines.next()?.split_whitespace().skip(1);
    names.zip(values).find(|(n, _)| *n == name)?.1.parse().ok()
}

/// `ListenOverflows` now, machine-wide (this network namespace).
pub fn listen_overflows() -> Option<u64> {
    parse_tcpext(
        &std::fs::read_to_string("/proc/net/netstat").ok()?,
        "ListenOverflows",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A name with a space and a parenthesis, as a process may call itself.
        let stat = "4242 (bre eze) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 269 0 0 20 0 5 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(731 + 269));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_stat_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn a_stat_line_gives_name_parent_and_reaped_children() {
        let stat = "2266 (postgres) S 1 2266 2266 0 -1 4194560 1234 0 0 0 \
                    731 269 5000 1200 20 0 1 0 12345 1000000 2000 18446744073709551615";
        assert_eq!(
            parse_stat_line(stat),
            Some(StatLine {
                name: "postgres",
                ppid: 1,
                ticks: 731 + 269,
                reaped_ticks: 5000 + 1200,
            })
        );
        assert_eq!(parse_stat_line("1 (x) S 1 2"), None);
    }

    #[test]
    fn vmrss_is_read_in_kib() {
        let status = "Name:\tbreeze-server\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t5\n";
        assert_eq!(parse_vmrss_bytes(status), Some(51234 * 1024));
        assert_eq!(parse_vmrss_bytes("Name:\tzombie\n"), None);
    }

    #[test]
    fn tcpext_counters_are_found_by_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                       TcpExt: 0 40 41\n\
                       IpExt: InNoRoutes\nIpExt: 0\n";
        assert_eq!(parse_tcpext(netstat, "ListenOverflows"), Some(40));
        assert_eq!(parse_tcpext(netstat, "ListenDrops"), Some(41));
        assert_eq!(parse_tcpext(netstat, "Nope"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(rss_bytes(None).unwrap() > 0);
    }

    #[test]
    fn thread_cpu_is_read_and_differenced_per_thread() {
        assert_eq!(parse_schedstat_ns("317914 0 1\n"), Some(317_914));
        assert_eq!(parse_schedstat_ns(""), None);
        let before = BTreeMap::from([(1, 100), (2, 50)]);
        // Thread 2 ended, thread 3 started.
        let after = BTreeMap::from([(1, 130), (3, 7)]);
        assert_eq!(cpu_ns_between(&before, &after), 37);
        let me = thread_cpu_ns(std::process::id()).unwrap();
        assert!(!me.is_empty());
    }
}
