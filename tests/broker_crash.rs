//! Crash safety: SIGKILL `sluiced` while a client produces with
//! acks = durable; after a restart every acknowledged record must be there,
//! byte for byte, in order, with no gap or duplicate.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use sluice_protocol::*;

fn value(iter: u32, seq: u64, pad: usize) -> Vec<u8> {
    let mut v = format!("{iter}:{seq}:").into_bytes();
    v.extend((0..pad).map(|i| (seq as usize + i) as u8));
    v
}

enum Event {
    /// Values about to be written to the socket (they may or may not land).
    Sent(Vec<Vec<u8>>),
    /// An acknowledged append: base offset and its values.
    Acked(u64, Vec<Vec<u8>>),
}

#[test]
fn acked_durable_records_survive_sigkill() {
    let seed = now_ms() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Small segments so kills also land around segment rolls.
    let mut b = TestBroker::start_with(&["--segment-bytes", "65536"]);
    let mut acked: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut sent: HashSet<Vec<u8>> = HashSet::new();
    let started = Instant::now();
    let mut seq = 0u64;

    for iter in 0..20u32 {
        let addr = b.addr;
        let (tx, rx) = mpsc::channel();
        let pad_seed = next();
        let first_seq = seq;
        let producer = std::thread::spawn(move || {
            let mut c = RawClient::connect(addr);
            let mut seq = first_seq;
            let mut r = pad_seed;
            loop {
                r = r
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = 1 + (r >> 60) as usize % 4;
                let values: Vec<Vec<u8>> = (0..n)
                    .map(|k| value(iter, seq + k as u64, ((r >> 20) as usize + k * 97) % 1500))
                    .collect();
                seq += n as u64;
                let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
                let req = RawClient::produce_request("crash", 0, batch_of(&refs), Acks::Durable);
                if tx.send(Event::Sent(values.clone())).is_err() {
                    return seq;
                }
                let mut buf = bytes::BytesMut::new();
                sluice_protocol::wire::encode_request(seq as u32, "crash", &req, &mut buf);
                if c.send_raw(&buf).is_err() {
                    return seq;
                }
                let Ok(payload) = c.read_frame() else {
                    return seq;
                };
                let Ok((_, resp)) =
                    sluice_protocol::wire::decode_response(ApiKey::Produce, payload)
                else {
                    return seq;
                };
                match resp {
                    Response::Produce(r) => {
                        let p = &r.topics[0].partitions[0];
                        if p.error != ErrorCode::None {
                            return seq;
                        }
                        assert_eq!(p.last_offset - p.base_offset + 1, values.len() as u64);
                        let _ = tx.send(Event::Acked(p.base_offset, values));
                    }
                    _ => return seq,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(30 + next() % 300));
        b.kill();
        seq = producer.join().expect("producer thread");
        let mut acked_now = 0;
        for ev in rx.try_iter() {
            match ev {
                Event::Sent(vs) => sent.extend(vs),
                Event::Acked(base, vs) => {
                    acked_now += vs.len();
                    for (i, v) in vs.into_iter().enumerate() {
                        assert!(
                            acked.insert(base + i as u64, v).is_none(),
                            "offset acked twice"
                        );
                    }
                }
            }
        }

        b.restart();
        let mut c = b.client();
        let log = c.fetch_all("crash", 0, 0);
        let last_acked = acked.keys().next_back().copied();
        let mut seen = HashSet::new();
        for (i, (o, v)) in log.iter().enumerate() {
            assert_eq!(
                *o, i as i64,
                "gap in offsets (seed {seed}, iteration {iter})"
            );
            assert!(
                seen.insert(v.clone()),
                "duplicate record at offset {o} (seed {seed})"
            );
            assert!(
                sent.contains(v),
                "record at offset {o} was never sent (seed {seed})"
            );
        }
        for (o, v) in &acked {
            let got = log.get(*o as usize).map(|(_, v)| v);
            assert_eq!(
                got,
                Some(v),
                "acked offset {o} lost or changed (seed {seed}, iteration {iter})"
            );
        }
        if let Some(last) = last_acked {
            assert!(log.len() as u64 > last);
        }
        eprintln!(
            "iteration {iter}: {acked_now} acked this round, {} acked total, {} in log",
            acked.len(),
            log.len()
        );
    }
    assert!(!acked.is_empty(), "no produce was ever acknowledged");
    assert!(started.elapsed() < Duration::from_secs(120));
}
