//! Per-incident order without one slow incident holding up a whole endpoint: an endpoint
//! has a few lanes that deliver in parallel, each strictly in order, and every notification
//! of one incident takes the same lane. A later notice of an incident therefore never
//! reaches an endpoint before an earlier one, while other incidents move on in other lanes.

/// The lane of `incident_id` among `lanes` (FNV-1a: stable across processes and builds,
/// unlike the std hasher, so the choice does not depend on a random seed).
pub fn lane_of(incident_id: &str, lanes: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in incident_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % lanes.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_incident_always_takes_the_same_lane_and_incidents_spread() {
        assert_eq!(lane_of("inc-1", 8), lane_of("inc-1", 8));
        let used: std::collections::HashSet<_> =
            (0..200).map(|i| lane_of(&format!("inc-{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
        assert_eq!(lane_of("anything", 0), 0);
    }
}
