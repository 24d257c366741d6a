//! The message pid 1 sends the helper once the step is gone: written by
//! [`super::init_loop`], read by the helper's supervision.

/// Bytes the init sends once the step is gone: its status (`i32`, `>= 0`
/// exit code, `< 0` minus the signal), then user and system CPU
/// milliseconds and the peak RSS in KiB of everything it reaped (`u64`
/// each), little-endian.
pub(crate) const STATUS_LEN: usize = 4 + 3 * 8;

/// Decodes the init's status message: (status, usage without wall time).
pub(crate) fn decode_status(b: &[u8]) -> Option<(i32, u64, u64, u64)> {
    if b.len() != STATUS_LEN {
        return None;
    }
    let u = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    Some((
        i32::from_le_bytes(b[..4].try_into().ok()?),
        u(4),
        u(12),
        u(20),
    ))
}
