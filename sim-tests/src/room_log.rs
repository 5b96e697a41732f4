//! What the applications got of the room every simulated user is in, and the checks on it:
//! one seq per message everywhere (one order for all members), rising seqs per client
//! incarnation (in order, each once), and every acknowledged message reaching every user.
//! Shared by the single-server and the cluster oracles.

use breeze_core::UserId;
use breeze_core::message::RoomDelivery;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct RoomLog {
    /// Room message `k` → the host that sent it.
    sent: BTreeMap<u64, usize>,
    /// The room seq each message came under, and back.
    seqs: BTreeMap<u64, u64>,
    ks: BTreeMap<u64, u64>,
    /// The highest room seq each (host, incarnation)'s application was given.
    floors: BTreeMap<(usize, u32), u64>,
    /// Who got each message: (host, incarnation).
    got: BTreeMap<u64, Vec<(usize, u32)>>,
    /// Messages handed to applications.
    pub deliveries: u64,
}

impl RoomLog {
    /// Room message `k` (body `r{k}`) was handed to host `host`'s client.
    pub fn sent(&mut self, k: u64, host: usize) {
        self.sent.insert(k, host);
    }

    pub fn is_room_message(&self, k: u64) -> bool {
        self.sent.contains_key(&k)
    }

    /// A room message reached the application of `host`; `user_of` names each host's user
    /// (the sender's included). Returns what is wrong with it.
    pub fn delivered(
        &mut self,
        host: usize,
        incarnation: u32,
        d: &RoomDelivery,
        user_of_host: impl Fn(usize) -> UserId,
    ) -> Vec<String> {
        self.deliveries += 1;
        let mut wrong = Vec::new();
        let Some(k) = d.body.strip_prefix('r').and_then(|k| k.parse::<u64>().ok()) else {
            return vec![format!("c{host}: unknown room message {:?}", d.body)];
        };
        let Some(&from_host) = self.sent.get(&k) else {
            return vec![format!("c{host}: room message r{k} was never sent")];
        };
        if d.from != user_of_host(from_host) {
            wrong.push(format!("c{host}: r{k} claims to be from {}", d.from));
        }
        match self.seqs.get(&k) {
            Some(&seq) if seq != d.seq => wrong.push(format!(
                "c{host}: r{k} came as seq {}, elsewhere as seq {seq}",
                d.seq
            )),
            Some(_) => {}
            None => {
                if let Some(other) = self.ks.insert(d.seq, k) {
                    wrong.push(format!("room seq {} is both r{other} and r{k}", d.seq));
                }
                self.seqs.insert(k, d.seq);
            }
        }
        let floor = self.floors.entry((host, incarnation)).or_default();
        if d.seq <= *floor {
            wrong.push(format!(
                "c{host}'s application got room seq {} after seq {floor}",
                d.seq
            ));
        } else {
            *floor = d.seq;
        }
        self.got.entry(k).or_default().push((host, incarnation));
        wrong
    }

    /// Acknowledged room message `k` from `from_host` reached every user some host logs in
    /// as (each is a member); `user_of` gives each host's user, `users` lists the hosts.
    pub fn check_reached(
        &self,
        k: u64,
        from_host: usize,
        hosts: usize,
        user_of_host: impl Fn(usize) -> UserId,
    ) -> Vec<String> {
        let got = self.got.get(&k);
        let users: BTreeSet<UserId> = (0..hosts).map(&user_of_host).collect();
        users
            .into_iter()
            .filter(|u| !got.is_some_and(|d| d.iter().any(|&(h, _)| &user_of_host(h) == u)))
            .map(|u| {
                format!(
                    "room message r{k} from c{from_host} was acknowledged but never reached {u}"
                )
            })
            .collect()
    }
}
