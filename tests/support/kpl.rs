//! A KPL aggregator for tests and the benchmark: packs user records into one Kinesis
//! record in the Kinesis Producer Library's format (magic, protobuf `AggregatedRecord`,
//! MD5). Written independently of the crate's decoder, by hand, so the two check each
//! other; the golden vectors in `tests/data/kpl` check both against the reference.

use md5::{Digest, Md5};

/// One user record: partition key, explicit hash key, data.
pub type UserRecord = (String, Option<String>, Vec<u8>);

const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    varint(out, (tag << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn index_of(table: &mut Vec<String>, key: &str) -> u64 {
    match table.iter().position(|k| k == key) {
        Some(i) => i as u64,
        None => {
            table.push(key.to_owned());
            (table.len() - 1) as u64
        }
    }
}

/// The data of one aggregated Kinesis record holding `records`, in order.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    let (mut pks, mut ehks) = (Vec::new(), Vec::new());
    let mut packed = Vec::new();
    for (pk, ehk, data) in records {
        let mut r = Vec::with_capacity(data.len() + 16);
        varint(&mut r, 1 << 3);
        varint(&mut r, index_of(&mut pks, pk));
        if let Some(ehk) = ehk {
            varint(&mut r, 2 << 3);
            varint(&mut r, index_of(&mut ehks, ehk));
        }
        bytes_field(&mut r, 3, data);
        packed.push(r);
    }
    let mut body = Vec::new();
    for pk in &pks {
        bytes_field(&mut body, 1, pk.as_bytes());
    }
    for ehk in &ehks {
        bytes_field(&mut body, 2, ehk.as_bytes());
    }
    for r in &packed {
        bytes_field(&mut body, 3, r);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}
