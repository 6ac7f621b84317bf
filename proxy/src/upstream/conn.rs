//! Requests per upstream connection, for `max_requests_per_connection`.
//!
//! Pingora owns the upstream connection pool and says only whether an attempt got a new or a
//! reused connection (and its file descriptor). A descriptor is unique among open
//! connections, so a new connection on descriptor N means every earlier connection on N is
//! closed: counting by descriptor, reset on every new connection, is exact, and the table
//! never holds more entries than the process has descriptors.

use std::collections::HashMap;
use std::sync::Mutex;

/// Request counts of one cluster's upstream connections.
#[derive(Debug, Default)]
pub struct ConnectionUses {
    counts: Mutex<HashMap<i32, u32>>,
}

impl ConnectionUses {
    /// Count one more request on the connection with descriptor `fd` (`reused`: the pool's
    /// answer) and return how many it has carried, this one included.
    pub fn count(&self, fd: i32, reused: bool) -> u32 {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = counts.entry(fd).or_insert(0);
        if !reused {
            *entry = 0;
        }
        *entry += 1;
        *entry
    }
}
