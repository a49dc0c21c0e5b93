//! Making any text storable on every backend: one rule every storage adapter applies, so a run's error
//! reads back the same from SQL and from memory.
//!
//! PostgreSQL rejects NUL in text, MySQL's columns have byte limits, and an error can carry megabytes. The
//! store never fails a recording because of what the text says: NUL becomes U+FFFD, and text over the
//! limit is cut on a character boundary, keeping its head and its tail (where a backtrace's most useful
//! frames are) around a marker that says how much was left out.

use std::borrow::Cow;

/// Most bytes of an `error_message` stored (64 KiB).
pub const MAX_ERROR_MESSAGE_BYTES: usize = 64 * 1024;
/// Most bytes of an `error_backtrace` stored (1 MiB).
pub const MAX_ERROR_BACKTRACE_BYTES: usize = 1024 * 1024;
/// Most bytes of a lease owner stored (its column is 255 characters).
pub const MAX_LEASE_OWNER_BYTES: usize = 255;

/// `text` as it will be stored: NUL replaced, and cut to at most `max_bytes` bytes.
pub fn storable(text: &str, max_bytes: usize) -> Cow<'_, str> {
    let text: Cow<'_, str> = if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    };
    if text.len() <= max_bytes {
        return text;
    }
    let omitted_estimate = text.len() - max_bytes;
    let marker = format!("\n… [{omitted_estimate} bytes omitted] …\n");
    if max_bytes < marker.len() * 2 {
        return Cow::Owned(text[..floor_char_boundary(&text, max_bytes)].to_owned());
    }
    let budget = max_bytes - marker.len();
    let head_end = floor_char_boundary(&text, budget * 3 / 4);
    let tail_start = ceil_char_boundary(&text, text.len() - (budget - head_end));
    let mut out = String::with_capacity(max_bytes);
    out.push_str(&text[..head_end]);
    out.push_str(&marker);
    out.push_str(&text[tail_start..]);
    debug_assert!(out.len() <= max_bytes);
    Cow::Owned(out)
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

fn ceil_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index += 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_clean_text_is_borrowed_unchanged() {
        assert!(matches!(storable("fine", 10), Cow::Borrowed("fine")));
    }

    #[test]
    fn nul_bytes_are_replaced() {
        assert_eq!(storable("a\0b", 100), "a\u{FFFD}b");
    }

    #[test]
    fn long_text_keeps_head_and_tail_within_the_limit_on_char_boundaries() {
        let text = format!("HEAD{}TAIL", "é🦀".repeat(300_000));
        let stored = storable(&text, 4096);
        assert!(stored.len() <= 4096, "{}", stored.len());
        assert!(stored.starts_with("HEAD"));
        assert!(stored.ends_with("TAIL"));
        assert!(stored.contains("bytes omitted"));
    }

    #[test]
    fn tiny_limits_do_not_panic() {
        for limit in 0..64 {
            let stored = storable("ééééééééééééééééééééééééééééééééééééééééé", limit);
            assert!(stored.len() <= limit, "{limit}: {stored}");
        }
    }
}
