//! The shell's terminal line editor, as a pure state machine over input bytes.
//!
//! [`LineEditor::feed`] takes one byte at a time as it arrives from a serial terminal (VT100 /
//! xterm key encodings) and writes the terminal output it causes — echo, cursor movement, redraw —
//! to a [`core::fmt::Write`]. Nothing here touches hardware, so the whole editor is tested on the
//! host, including an interpreter of its output that checks the screen always shows [`LineEditor::line`].
//!
//! Keys understood:
//!
//! | Input                                            | Effect                                  |
//! |--------------------------------------------------|-----------------------------------------|
//! | printable ASCII                                  | insert at the cursor                    |
//! | `\r`, `\n` (a `\r\n` or `\n\r` pair counts once) | submit the line                         |
//! | `0x7f`, `0x08` (Backspace, Ctrl-H)               | delete before the cursor                |
//! | Left / Right, Ctrl-B / Ctrl-F                    | move the cursor                         |
//! | Ctrl- or Alt-modified Left / Right               | move by word                            |
//! | Home / End, Ctrl-A / Ctrl-E                      | move to the start / end                 |
//! | Delete (`ESC[3~`)                                | delete under the cursor                 |
//! | Up / Down, Ctrl-P / Ctrl-N                       | walk the history (Down past the newest restores the draft) |
//! | Ctrl-U                                           | clear the line                          |
//! | Ctrl-K                                           | delete from the cursor to the end       |
//! | Ctrl-W                                           | delete the word before the cursor       |
//! | Ctrl-C                                           | abandon the line ([`Outcome::Interrupted`]) |
//! | Ctrl-D                                           | [`Outcome::EndOfInput`] on an empty line, else delete under the cursor |
//! | Ctrl-L                                           | redraw the line in place                |
//!
//! Every other control byte, every byte `>= 0x80` and every unknown or malformed escape sequence
//! is consumed without effect. No byte sequence can make the editor panic, put anything but
//! printable ASCII into the line, or grow the line past its maximum length.
//!
//! Output uses only printable ASCII, `\r`, `\n`, BEL, `\x08`, `ESC[nC`, `ESC[nD` and `ESC[K`. The
//! editor assumes the line (plus the caller's prompt) fits on one terminal row: cursor movement
//! does not cross the terminal's soft line wraps.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// Rung when input is refused because the line is full.
const BEL: &str = "\x07";
/// Erase from the cursor to the end of the terminal line.
const CLEAR_TO_EOL: &str = "\x1b[K";
/// A control sequence longer than this is abandoned (terminals never send such keys).
const MAX_CSI_LEN: u8 = 32;
/// Numeric parameters kept per control sequence; more make the sequence malformed.
const MAX_CSI_PARAMS: usize = 4;
/// Parameter values saturate here; no key needs more.
const MAX_CSI_PARAM: u16 = 9999;

/// What a call to [`LineEditor::feed`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The byte was handled (or ignored); the line is still being edited.
    Pending,
    /// Enter was pressed; holds the finished line (possibly empty). The editor starts a new,
    /// empty line.
    Submitted(String),
    /// Ctrl-C was pressed: `^C` and a new line were written and the line was discarded.
    Interrupted,
    /// Ctrl-D was pressed on an empty line. Nothing was written; the caller decides what to do
    /// (the editor stays usable).
    EndOfInput,
}

/// An editing key decoded from an escape sequence or a control byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Up,
    Down,
    Left,
    Right,
    WordLeft,
    WordRight,
    Home,
    End,
    Delete,
}

/// A control sequence (`ESC [` ...) being collected.
#[derive(Clone, Copy, Debug, Default)]
struct Csi {
    /// Numeric parameters; missing ones read as 0.
    params: [u16; MAX_CSI_PARAMS],
    /// Index of the parameter currently being collected.
    index: usize,
    /// Parameter and intermediate bytes seen so far.
    len: u8,
    /// The sequence has a shape no key uses (private marker, sub-parameters, intermediates,
    /// too many parameters); it is consumed to its final byte and then dropped.
    malformed: bool,
}

impl Csi {
    /// Adds a parameter or intermediate byte (`0x20..=0x3f`). Returns `false` if the sequence
    /// has grown too long and must be abandoned.
    fn push(&mut self, byte: u8) -> bool {
        self.len = self.len.saturating_add(1);
        if self.len > MAX_CSI_LEN {
            return false;
        }
        match byte {
            b'0'..=b'9' => {
                if let Some(param) = self.params.get_mut(self.index) {
                    *param = param
                        .saturating_mul(10)
                        .saturating_add(u16::from(byte - b'0'))
                        .min(MAX_CSI_PARAM);
                }
            }
            b';' if self.index + 1 < MAX_CSI_PARAMS => self.index += 1,
            // Too many parameters, `:` sub-parameters, `<=>?` private markers, intermediates.
            _ => self.malformed = true,
        }
        true
    }

    /// Decodes the key a sequence ending in `final_byte` (`0x40..=0x7e`) stands for, if any.
    fn key(&self, final_byte: u8) -> Option<Key> {
        if self.malformed {
            return None;
        }
        let count = if self.len == 0 { 0 } else { self.index + 1 };
        let [first, modifier, ..] = self.params;
        match final_byte {
            // `ESC [ A`, or `ESC [ 1 ; <modifier> A` for modified cursor keys.
            b'A'..=b'D' | b'H' | b'F' if count <= 2 && first <= 1 => {
                // xterm encodes modifiers as 1 + (shift 1 | alt 2 | ctrl 4).
                let by_word = count == 2 && (modifier.saturating_sub(1) & 0b110) != 0;
                cursor_key(final_byte, by_word)
            }
            // `ESC [ <n> ~` and `ESC [ <n> ; <modifier> ~`.
            b'~' if (1..=2).contains(&count) => match first {
                1 | 7 => Some(Key::Home),
                4 | 8 => Some(Key::End),
                3 => Some(Key::Delete),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Decodes the cursor-key final byte shared by CSI and SS3 sequences.
fn cursor_key(final_byte: u8, by_word: bool) -> Option<Key> {
    match final_byte {
        b'A' => Some(Key::Up),
        b'B' => Some(Key::Down),
        b'C' if by_word => Some(Key::WordRight),
        b'C' => Some(Key::Right),
        b'D' if by_word => Some(Key::WordLeft),
        b'D' => Some(Key::Left),
        b'H' => Some(Key::Home),
        b'F' => Some(Key::End),
        _ => None,
    }
}

/// Where the escape-sequence decoder stands.
#[derive(Clone, Copy, Debug)]
enum Escape {
    /// Not inside an escape sequence.
    Ground,
    /// After `ESC`.
    Esc,
    /// After `ESC [`.
    Csi(Csi),
    /// After `ESC O`.
    Ss3,
}

/// C0 control bytes and DEL. Inside an escape sequence these abandon the sequence and are then
/// handled as ordinary input, so Enter, Backspace or Ctrl-C always work.
fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

/// Whether `c` separates words for Ctrl-W and word movement.
fn is_space(c: u8) -> bool {
    c == b' '
}

/// Writes to the terminal. Output errors are ignored: the editor's state never depends on them.
fn emit(out: &mut dyn Write, s: &str) {
    let _ = out.write_str(s);
}

/// Moves the terminal cursor `n` columns left.
fn move_left(out: &mut dyn Write, n: usize) {
    match n {
        0 => {}
        1 => emit(out, "\x08"),
        _ => {
            let _ = write!(out, "\x1b[{n}D");
        }
    }
}

/// Moves the terminal cursor `n` columns right (`ESC[0C` would move one column, so 0 writes
/// nothing).
fn move_right(out: &mut dyn Write, n: usize) {
    if n > 0 {
        let _ = write!(out, "\x1b[{n}C");
    }
}

/// A terminal line editor with history.
///
/// The line only ever holds printable ASCII, so byte offsets and terminal columns coincide.
/// The caller writes the prompt; the editor only ever moves the cursor within the line it drew
/// after it.
#[derive(Clone, Debug)]
pub struct LineEditor {
    /// The line being edited.
    buf: String,
    /// Cursor position in `buf` (`0..=buf.len()`).
    cursor: usize,
    /// Longest line accepted.
    max_line_len: usize,
    /// Submitted lines, oldest first.
    history: VecDeque<String>,
    /// Most entries `history` holds.
    history_capacity: usize,
    /// The history entry shown in `buf`, or `None` when editing the draft.
    history_index: Option<usize>,
    /// The line being typed before the history walk started, restored by Down past the newest.
    draft: String,
    /// Escape-sequence decoder state.
    escape: Escape,
    /// The Enter byte just handled; the other half of a `\r\n` / `\n\r` pair is swallowed.
    enter: Option<u8>,
}

impl LineEditor {
    /// Creates an editor with an empty line, remembering up to `history_capacity` submitted lines
    /// (0 disables history) and accepting lines of up to `max_line_len` bytes.
    pub fn new(history_capacity: usize, max_line_len: usize) -> Self {
        Self {
            buf: String::new(),
            cursor: 0,
            max_line_len,
            history: VecDeque::new(),
            history_capacity,
            history_index: None,
            draft: String::new(),
            escape: Escape::Ground,
            enter: None,
        }
    }

    /// Feeds one input byte; terminal output (echo, cursor movement, redraw) is written to `out`.
    ///
    /// Returns [`Outcome::Pending`] unless the byte finished the line (Enter), abandoned it
    /// (Ctrl-C) or signalled end of input (Ctrl-D on an empty line). Errors from `out` are
    /// ignored.
    pub fn feed(&mut self, byte: u8, out: &mut dyn Write) -> Outcome {
        if let Some(first) = self.enter.take()
            && matches!(byte, b'\r' | b'\n')
            && byte != first
        {
            // Second half of a CRLF / LFCR pair: the line was already submitted.
            return Outcome::Pending;
        }
        match core::mem::replace(&mut self.escape, Escape::Ground) {
            Escape::Ground => return self.ground(byte, out),
            Escape::Esc => match byte {
                b'[' => self.escape = Escape::Csi(Csi::default()),
                b'O' => self.escape = Escape::Ss3,
                _ if is_control(byte) => return self.ground(byte, out),
                // `ESC <char>` (Alt-<char>) and `ESC <non-ASCII>`: consumed.
                _ => {}
            },
            Escape::Ss3 => {
                if is_control(byte) {
                    return self.ground(byte, out);
                }
                if let Some(key) = cursor_key(byte, false) {
                    self.key(key, out);
                }
            }
            Escape::Csi(mut csi) => match byte {
                _ if is_control(byte) => return self.ground(byte, out),
                0x20..=0x3f => {
                    if csi.push(byte) {
                        self.escape = Escape::Csi(csi);
                    }
                }
                0x40..=0x7e => {
                    if let Some(key) = csi.key(byte) {
                        self.key(key, out);
                    }
                }
                // Non-ASCII: not part of any key; the sequence is abandoned.
                _ => {}
            },
        }
        Outcome::Pending
    }

    /// The lines submitted so far (non-blank, consecutive duplicates dropped), oldest first.
    pub fn history(&self) -> impl Iterator<Item = &str> {
        self.history.iter().map(String::as_str)
    }

    /// The line currently being edited.
    pub fn line(&self) -> &str {
        &self.buf
    }

    /// Handles a byte outside any escape sequence.
    fn ground(&mut self, byte: u8, out: &mut dyn Write) -> Outcome {
        match byte {
            b'\r' | b'\n' => {
                self.enter = Some(byte);
                return self.submit(out);
            }
            0x1b => self.escape = Escape::Esc,
            0x7f | 0x08 => self.backspace(out),
            0x01 => self.key(Key::Home, out),   // Ctrl-A
            0x02 => self.key(Key::Left, out),   // Ctrl-B
            0x03 => return self.interrupt(out), // Ctrl-C
            0x04 => {
                // Ctrl-D
                if self.buf.is_empty() {
                    self.leave_history();
                    return Outcome::EndOfInput;
                }
                self.key(Key::Delete, out);
            }
            0x05 => self.key(Key::End, out),               // Ctrl-E
            0x06 => self.key(Key::Right, out),             // Ctrl-F
            0x0b => self.kill_to_end(out),                 // Ctrl-K
            0x0c => self.refresh(out),                     // Ctrl-L
            0x0e => self.key(Key::Down, out),              // Ctrl-N
            0x10 => self.key(Key::Up, out),                // Ctrl-P
            0x15 => self.replace_line(String::new(), out), // Ctrl-U
            0x17 => self.delete_word(out),                 // Ctrl-W
            0x20..=0x7e => self.insert(byte, out),
            _ => {}
        }
        Outcome::Pending
    }

    /// Performs an editing key.
    fn key(&mut self, key: Key, out: &mut dyn Write) {
        match key {
            Key::Up => self.history_up(out),
            Key::Down => self.history_down(out),
            Key::Left => self.move_to(self.cursor.saturating_sub(1), out),
            Key::Right => self.move_to((self.cursor + 1).min(self.buf.len()), out),
            Key::WordLeft => self.move_to(self.word_start(), out),
            Key::WordRight => self.move_to(self.word_end(), out),
            Key::Home => self.move_to(0, out),
            Key::End => self.move_to(self.buf.len(), out),
            Key::Delete => {
                if self.cursor < self.buf.len() {
                    self.buf.remove(self.cursor);
                    self.redraw_tail(out);
                }
            }
        }
    }

    /// Inserts a printable byte at the cursor, redrawing the text after it.
    fn insert(&mut self, byte: u8, out: &mut dyn Write) {
        if self.buf.len() >= self.max_line_len {
            emit(out, BEL);
            return;
        }
        self.buf.insert(self.cursor, char::from(byte));
        // Echo the new character and everything after it, then step back over the tail.
        emit(out, &self.buf[self.cursor..]);
        self.cursor += 1;
        move_left(out, self.buf.len() - self.cursor);
    }

    /// Deletes the character before the cursor.
    fn backspace(&mut self, out: &mut dyn Write) {
        if self.cursor == 0 {
            return;
        }
        self.cursor -= 1;
        self.buf.remove(self.cursor);
        move_left(out, 1);
        self.redraw_tail(out);
    }

    /// Deletes from the start of the word before the cursor up to the cursor.
    fn delete_word(&mut self, out: &mut dyn Write) {
        let start = self.word_start();
        if start == self.cursor {
            return;
        }
        self.buf.replace_range(start..self.cursor, "");
        move_left(out, self.cursor - start);
        self.cursor = start;
        self.redraw_tail(out);
    }

    /// Deletes from the cursor to the end of the line.
    fn kill_to_end(&mut self, out: &mut dyn Write) {
        if self.cursor < self.buf.len() {
            self.buf.truncate(self.cursor);
            emit(out, CLEAR_TO_EOL);
        }
    }

    /// Start of the word before the cursor: skip spaces, then non-spaces, leftwards.
    fn word_start(&self) -> usize {
        let bytes = self.buf.as_bytes();
        let mut pos = self.cursor;
        while pos > 0 && is_space(bytes[pos - 1]) {
            pos -= 1;
        }
        while pos > 0 && !is_space(bytes[pos - 1]) {
            pos -= 1;
        }
        pos
    }

    /// End of the word after the cursor: skip spaces, then non-spaces, rightwards.
    fn word_end(&self) -> usize {
        let bytes = self.buf.as_bytes();
        let mut pos = self.cursor;
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        while pos < bytes.len() && !is_space(bytes[pos]) {
            pos += 1;
        }
        pos
    }

    /// Moves the cursor to `pos` (`<= buf.len()`).
    fn move_to(&mut self, pos: usize, out: &mut dyn Write) {
        if pos < self.cursor {
            move_left(out, self.cursor - pos);
        } else {
            move_right(out, pos - self.cursor);
        }
        self.cursor = pos;
    }

    /// Redraws from the cursor to the end of the line after the text there changed, leaving the
    /// terminal cursor where it was.
    fn redraw_tail(&self, out: &mut dyn Write) {
        emit(out, &self.buf[self.cursor..]);
        emit(out, CLEAR_TO_EOL);
        move_left(out, self.buf.len() - self.cursor);
    }

    /// Redraws the whole line, keeping the cursor (Ctrl-L).
    fn refresh(&self, out: &mut dyn Write) {
        move_left(out, self.cursor);
        emit(out, &self.buf);
        emit(out, CLEAR_TO_EOL);
        move_left(out, self.buf.len() - self.cursor);
    }

    /// Replaces the whole line with `line`, leaving the cursor at its end.
    fn replace_line(&mut self, line: String, out: &mut dyn Write) {
        move_left(out, self.cursor);
        self.buf = line;
        self.cursor = self.buf.len();
        emit(out, &self.buf);
        emit(out, CLEAR_TO_EOL);
    }

    /// Shows the next older history entry, saving the draft when the walk starts.
    fn history_up(&mut self, out: &mut dyn Write) {
        let index = match self.history_index {
            Some(0) => return,
            Some(index) => index - 1,
            None => match self.history.len().checked_sub(1) {
                Some(newest) => {
                    self.draft.clone_from(&self.buf);
                    newest
                }
                None => return,
            },
        };
        if let Some(entry) = self.history.get(index) {
            let entry = entry.clone();
            self.history_index = Some(index);
            self.replace_line(entry, out);
        }
    }

    /// Shows the next newer history entry, or the draft after the newest.
    fn history_down(&mut self, out: &mut dyn Write) {
        let Some(index) = self.history_index else {
            return;
        };
        let line = match self.history.get(index + 1) {
            Some(entry) => {
                self.history_index = Some(index + 1);
                entry.clone()
            }
            None => {
                self.history_index = None;
                core::mem::take(&mut self.draft)
            }
        };
        self.replace_line(line, out);
    }

    /// Forgets any history walk in progress.
    fn leave_history(&mut self) {
        self.history_index = None;
        self.draft.clear();
    }

    /// Ends the line (Enter).
    fn submit(&mut self, out: &mut dyn Write) -> Outcome {
        emit(out, "\r\n");
        let line = core::mem::take(&mut self.buf);
        self.cursor = 0;
        self.leave_history();
        self.remember(&line);
        Outcome::Submitted(line)
    }

    /// Abandons the line (Ctrl-C).
    fn interrupt(&mut self, out: &mut dyn Write) -> Outcome {
        emit(out, "^C\r\n");
        self.buf.clear();
        self.cursor = 0;
        self.leave_history();
        Outcome::Interrupted
    }

    /// Adds a submitted line to the history unless it is blank or repeats the newest entry.
    fn remember(&mut self, line: &str) {
        if self.history_capacity == 0
            || line.bytes().all(is_space)
            || self.history.back().is_some_and(|newest| newest == line)
        {
            return;
        }
        while self.history.len() >= self.history_capacity {
            self.history.pop_front();
        }
        self.history.push_back(String::from(line));
    }
}

/// Why [`split_words`] rejected a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// A quote was opened but never closed; holds the quote character (`'` or `"`).
    UnterminatedQuote(char),
    /// The line ends with a backslash that escapes nothing.
    TrailingBackslash,
}

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnterminatedQuote(quote) => write!(f, "unterminated {quote} quote"),
            Self::TrailingBackslash => f.write_str("trailing backslash"),
        }
    }
}

impl core::error::Error for SplitError {}

/// Splits a command line into words: whitespace-separated, with "double" and 'single' quotes and
/// backslash escapes; an unterminated quote is an error value.
///
/// The rules follow the POSIX shell's, without expansions:
/// - outside quotes, whitespace separates words and `\c` stands for `c` (any character);
/// - inside `'...'` every character is literal;
/// - inside `"..."` only `\"` and `\\` are escapes; any other backslash is kept;
/// - quoted and unquoted parts next to each other form one word (`a"b c"d` is `ab cd`), and `""`
///   is an empty word.
///
/// Empty or all-whitespace input gives no words.
pub fn split_words(line: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Distinguishes an empty quoted word from no word at all.
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(core::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                word.push(chars.next().ok_or(SplitError::TrailingBackslash)?);
                in_word = true;
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(SplitError::UnterminatedQuote('\'')),
                        Some('\'') => break,
                        Some(c) => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(SplitError::UnterminatedQuote('"')),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            None => return Err(SplitError::UnterminatedQuote('"')),
                            Some(escaped @ ('"' | '\\')) => word.push(escaped),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                        },
                        Some(c) => word.push(c),
                    }
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests;
