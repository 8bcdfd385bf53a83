//! Text from outside (a hook's output, a slave's report, an API's error) made safe to show.
//!
//! A terminal obeys the control characters in what it prints: ESC starts a sequence that can
//! move the cursor, rewrite lines already shown, set the window title, or (on some terminals)
//! answer back into the shell's input. `status` is read by root, and a hook's stderr can carry
//! words a slave wrote, so nothing that came from outside reaches a terminal, the journal or an
//! event with a control character in it: [`printable`] shows C0, DEL, C1 and the invisible
//! reordering characters (bidi overrides, line separators) as escapes (`\x1b`, `\u{202e}`).

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character replaced by a visible escape: C0 (U+0000 to U+001F,
/// newline and tab included) and DEL as `\x1b`, C1 (U+0080 to U+009F, one of which, CSI, is
/// ESC `[` in one character) and the invisible characters that reorder or split what a reader
/// sees (bidirectional overrides and isolates, the line and paragraph separators) as
/// `\u{202e}`. Borrowed when there is nothing to replace. A backslash is kept as it is: the
/// output is for people to read, not to be parsed back.
pub fn printable(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// [`printable`], but newline and tab are kept: for text shown as several lines (a hook's
/// whole output). Carriage return is still escaped (it would let a line overwrite itself).
/// Nothing shows several lines yet (hook output is logged line by line): tests only.
#[cfg(test)]
fn printable_multiline(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn unsafe_char(c: char, keep_lines: bool) -> bool {
    if keep_lines && (c == '\n' || c == '\t') {
        return false;
    }
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep_lines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| unsafe_char(c, keep_lines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !unsafe_char(c, keep_lines) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "rsync: [sender] change_dir \"/srv/www\" failed: No such file (2) – ünïcode";
        assert!(matches!(printable(s), Cow::Borrowed(_)));
        assert_eq!(printable(s), s);
    }

    #[test]
    fn escape_sequences_and_every_control_character_are_shown_not_obeyed() {
        // Red text, a cursor move up and a line erase, a window title (OSC ... BEL), CSI as
        // one C1 character, DEL, NUL, a carriage return that would overwrite the line.
        let s = "\u{1b}[31mred\u{1b}[1A\u{1b}[2K\u{1b}]0;pwned\u{7}\u{9b}2J\u{7f}\0ok\rfake";
        let p = printable(s);
        assert_eq!(
            p,
            "\\x1b[31mred\\x1b[1A\\x1b[2K\\x1b]0;pwned\\x07\\u{9b}2J\\x7f\\x00ok\\x0dfake"
        );
        assert!(!p.chars().any(char::is_control));
    }

    #[test]
    fn newline_and_tab_are_escaped_on_one_line_and_kept_on_many() {
        let s = "one\ntwo\tthree\r\u{1b}[K";
        assert_eq!(printable(s), "one\\x0atwo\\x09three\\x0d\\x1b[K");
        assert_eq!(printable_multiline(s), "one\ntwo\tthree\\x0d\\x1b[K");
    }

    #[test]
    fn characters_that_reorder_or_split_lines_are_shown() {
        // "Trojan source": an override makes "i-evil" read backwards; U+2028 splits a line.
        assert_eq!(
            printable("i-\u{202e}live\u{2028}x"),
            "i-\\u{202e}live\\u{2028}x"
        );
    }

    /// A hook's stderr (what ssh or rsync relayed from a slave) comes back from the hook
    /// runner escaped, in the error `status` shows and the log; the hook's own tests are in
    /// `hooks.rs`, this one is about the text.
    #[tokio::test]
    async fn escape_sequences_in_hook_stderr_come_out_escaped() {
        let hook = crate::config::Hook {
            argv: [
                "sh",
                "-c",
                r"printf '\033]0;owned\007\033[2Jrsync: error\r\n' >&2; exit 23",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            timeout: crate::config::Dur::secs(10),
            retries: 0,
            retry_delay: crate::config::Dur::millis(10),
        };
        let run = crate::hooks::run("pre_register", &hook, &Default::default()).await;
        let e = run.result.unwrap_err();
        let crate::hooks::HookError::Failed { stderr, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            stderr,
            &vec!["\\x1b]0;owned\\x07\\x1b[2Jrsync: error".to_string()]
        );
        assert!(!e.to_string().chars().any(char::is_control), "{e}");
    }
}
