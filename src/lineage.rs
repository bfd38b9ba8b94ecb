//! Shard lineage: which shards may be read now.
//!
//! Resharding closes shards and opens children: a split gives one parent two children,
//! a merge gives two parents (`parent` and `adjacent_parent`) one child. Records of a
//! partition key move from the parent to a child, so reading a child before its parents
//! are read to the end breaks per-key order. A shard is *ready* when every parent is
//! finished (its checkpoint row carries `Finished`) or no longer listed by ListShards
//! (trimmed past the stream's retention). Only ready, unfinished shards are assigned.

use std::collections::HashSet;

use crate::stream::ShardInfo;

/// The ids of the listed shards that are unfinished and ready, in listing order.
pub(crate) fn ready_shards(listed: &[ShardInfo], finished: &HashSet<String>) -> Vec<String> {
    let listed_ids: HashSet<&str> = listed.iter().map(|s| s.id.as_str()).collect();
    let done = |parent: &Option<String>| match parent {
        None => true,
        Some(p) => finished.contains(p) || !listed_ids.contains(p.as_str()),
    };
    listed
        .iter()
        .filter(|s| !finished.contains(&s.id))
        .filter(|s| done(&s.parent) && done(&s.adjacent_parent))
        .map(|s| s.id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
        }
    }

    fn finished(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_fresh_stream_is_all_ready() {
        let listed = [shard("0", None, None), shard("1", None, None)];
        assert_eq!(ready_shards(&listed, &finished(&[])), ["0", "1"]);
    }

    #[test]
    fn split_children_wait_for_the_parent() {
        let listed = [
            shard("0", None, None),
            shard("1", None, None),
            shard("2", Some("0"), None),
            shard("3", Some("0"), None),
        ];
        assert_eq!(ready_shards(&listed, &finished(&[])), ["0", "1"]);
        assert_eq!(ready_shards(&listed, &finished(&["0"])), ["1", "2", "3"]);
    }

    #[test]
    fn a_merge_child_waits_for_both_parents() {
        let listed = [
            shard("0", None, None),
            shard("1", None, None),
            shard("2", Some("0"), Some("1")),
        ];
        assert_eq!(ready_shards(&listed, &finished(&["0"])), ["1"]);
        assert_eq!(ready_shards(&listed, &finished(&["1"])), ["0"]);
        assert_eq!(ready_shards(&listed, &finished(&["0", "1"])), ["2"]);
    }

    #[test]
    fn split_of_a_split_waits_generation_by_generation() {
        let listed = [
            shard("0", None, None),
            shard("1", Some("0"), None),
            shard("2", Some("0"), None),
            shard("3", Some("1"), None),
            shard("4", Some("1"), None),
        ];
        assert_eq!(ready_shards(&listed, &finished(&[])), ["0"]);
        assert_eq!(ready_shards(&listed, &finished(&["0"])), ["1", "2"]);
        assert_eq!(
            ready_shards(&listed, &finished(&["0", "1"])),
            ["2", "3", "4"]
        );
    }

    #[test]
    fn merging_a_child_with_an_old_shard() {
        // 0 split into 2 and 3; then 3 merged with the untouched 1 into 4.
        let listed = [
            shard("0", None, None),
            shard("1", None, None),
            shard("2", Some("0"), None),
            shard("3", Some("0"), None),
            shard("4", Some("3"), Some("1")),
        ];
        assert_eq!(ready_shards(&listed, &finished(&[])), ["0", "1"]);
        assert_eq!(ready_shards(&listed, &finished(&["0"])), ["1", "2", "3"]);
        assert_eq!(ready_shards(&listed, &finished(&["0", "1"])), ["2", "3"]);
        assert_eq!(
            ready_shards(&listed, &finished(&["0", "1", "3"])),
            ["2", "4"]
        );
    }

    #[test]
    fn trimmed_parents_count_as_done() {
        // The parent aged out of the stream: it is no longer listed.
        let listed = [
            shard("2", Some("0"), None),
            shard("3", Some("0"), Some("1")),
        ];
        assert_eq!(ready_shards(&listed, &finished(&[])), ["2", "3"]);
    }

    #[test]
    fn update_shard_count_mass_reshard() {
        // 4 shards doubled to 8 (each split), then halved back to 4 (pairs merged).
        let mut listed: Vec<ShardInfo> =
            (0..4).map(|i| shard(&i.to_string(), None, None)).collect();
        for i in 0..4 {
            let p = i.to_string();
            listed.push(shard(&(4 + 2 * i).to_string(), Some(&p), None));
            listed.push(shard(&(5 + 2 * i).to_string(), Some(&p), None));
        }
        for i in 0..4 {
            let (a, b) = ((4 + 2 * i).to_string(), (5 + 2 * i).to_string());
            listed.push(shard(&(12 + i).to_string(), Some(&a), Some(&b)));
        }
        assert_eq!(ready_shards(&listed, &finished(&[])), ["0", "1", "2", "3"]);
        let gen1: Vec<String> = (4..12).map(|i| i.to_string()).collect();
        assert_eq!(
            ready_shards(&listed, &finished(&["0", "1", "2", "3"])),
            gen1
        );
        let mut done: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        done.retain(|s| s != "11");
        let done: HashSet<String> = done.into_iter().collect();
        assert_eq!(ready_shards(&listed, &done), ["11", "12", "13", "14"]);
        // Once the parents are trimmed from the listing, the children stand alone.
        let last: Vec<ShardInfo> = listed[12..].to_vec();
        assert_eq!(
            ready_shards(&last, &HashSet::new()),
            ["12", "13", "14", "15"]
        );
    }
}
