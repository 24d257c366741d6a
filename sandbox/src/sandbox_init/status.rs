//! The message pid 1 sends the helper once the step is gone: written by
//! [`super::init_loop`], read by the helper's supervision.

use crate::sys::ChildUsage;

/// Bytes the init sends once the step is gone: its status (`i32`, `>= 0`
/// exit code, `< 0` minus the signal), then user and system CPU
/// milliseconds and the peak RSS in KiB of everything it reaped (`u64`
/// each), little-endian.
pub(crate) const STATUS_LEN: usize = 4 + 3 * 8;

/// The init's status message for `status` and the usage of what it reaped.
pub(crate) fn encode_status(status: i32, usage: ChildUsage) -> Vec<u8> {
    let mut msg = Vec::with_capacity(STATUS_LEN);
    msg.extend_from_slice(&status.to_le_bytes());
    for v in [usage.user_ms, usage.sys_ms, usage.max_rss_kib] {
        msg.extend_from_slice(&v.to_le_bytes());
    }
    msg
}

/// Decodes the init's status message: the status and the usage (without
/// wall time). Anything but exactly [`STATUS_LEN`] bytes is no message.
pub(crate) fn decode_status(b: &[u8]) -> Option<(i32, ChildUsage)> {
    if b.len() != STATUS_LEN {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((
        i32::from_le_bytes(b[..4].try_into().ok()?),
        ChildUsage {
            user_ms: u(4),
            sys_ms: u(12),
            max_rss_kib: u(20),
        },
    ))
}
