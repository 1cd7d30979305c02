use super::*;
use alloc::vec;

const UP: &[u8] = b"\x1b[A";
const DOWN: &[u8] = b"\x1b[B";
const RIGHT: &[u8] = b"\x1b[C";
const LEFT: &[u8] = b"\x1b[D";

/// Feeds `bytes`, returning the outcomes other than `Pending` and everything written.
fn feed(ed: &mut LineEditor, bytes: &[u8]) -> (Vec<Outcome>, String) {
    let mut out = String::new();
    let mut outcomes = Vec::new();
    for &byte in bytes {
        let outcome = ed.feed(byte, &mut out);
        if outcome != Outcome::Pending {
            outcomes.push(outcome);
        }
    }
    (outcomes, out)
}

fn submitted(line: &str) -> Outcome {
    Outcome::Submitted(String::from(line))
}

fn history(ed: &LineEditor) -> Vec<&str> {
    ed.history().collect()
}

/// A minimal terminal of unbounded width that understands exactly the output repertoire the
/// editor promises, and panics on anything else (or on moving left of column 0, which on a real
/// terminal would overwrite the prompt).
#[derive(Default)]
struct Terminal {
    /// Finished rows, then the current one.
    rows: Vec<Vec<u8>>,
    row: Vec<u8>,
    col: usize,
    bells: usize,
    /// Bytes of an escape sequence being collected (starting after ESC).
    escape: Option<Vec<u8>>,
}

impl Terminal {
    fn write(&mut self, output: &str) {
        for byte in output.bytes() {
            self.byte(byte);
        }
    }

    fn byte(&mut self, byte: u8) {
        if let Some(seq) = &mut self.escape {
            seq.push(byte);
            if !(0x40..=0x7e).contains(&byte) || seq.len() == 1 {
                assert!(seq.len() < 16, "runaway escape sequence {seq:?}");
                return;
            }
            let seq = self.escape.take().unwrap();
            self.sequence(&seq);
            return;
        }
        match byte {
            0x20..=0x7e => {
                if self.row.len() <= self.col {
                    self.row.resize(self.col + 1, b' ');
                }
                self.row[self.col] = byte;
                self.col += 1;
            }
            0x08 => {
                assert!(self.col > 0, "backspace at column 0");
                self.col -= 1;
            }
            b'\r' => self.col = 0,
            b'\n' => self.rows.push(core::mem::take(&mut self.row)),
            0x07 => self.bells += 1,
            0x1b => self.escape = Some(Vec::new()),
            _ => panic!("unexpected output byte {byte:#04x}"),
        }
    }

    fn sequence(&mut self, seq: &[u8]) {
        assert_eq!(seq[0], b'[', "only CSI sequences expected: {seq:?}");
        let (&final_byte, params) = seq[1..].split_last().unwrap();
        let params = core::str::from_utf8(params).unwrap();
        assert!(
            params.bytes().all(|b| b.is_ascii_digit()),
            "bad params {params:?}"
        );
        let n: usize = if params.is_empty() {
            1
        } else {
            params.parse().unwrap()
        };
        match final_byte {
            b'D' => {
                assert!(
                    n >= 1 && n <= self.col,
                    "ESC[{params}D at column {}",
                    self.col
                );
                self.col -= n;
            }
            b'C' => {
                assert!(n >= 1 && !params.starts_with('0'), "ESC[{params}C");
                self.col += n;
            }
            b'K' => {
                assert!(params.is_empty() || params == "0");
                self.row.truncate(self.col);
            }
            _ => panic!("unexpected sequence ESC{}", String::from_utf8_lossy(seq)),
        }
    }

    fn current(&self) -> &str {
        core::str::from_utf8(&self.row).unwrap()
    }

    /// Asserts the screen shows exactly the editor's line, with the cursor in the same place.
    fn assert_shows(&self, ed: &LineEditor) {
        assert!(
            self.escape.is_none(),
            "output ends inside an escape sequence"
        );
        assert_eq!(self.current(), ed.line(), "screen differs from line");
        assert_eq!(
            self.col, ed.cursor,
            "screen cursor differs from editor cursor"
        );
    }
}

/// Feeds `bytes` through an editor and a terminal, checking the screen after every byte.
fn feed_checked(ed: &mut LineEditor, term: &mut Terminal, bytes: &[u8]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for &byte in bytes {
        let mut out = String::new();
        let outcome = ed.feed(byte, &mut out);
        term.write(&out);
        term.assert_shows(ed);
        if outcome != Outcome::Pending {
            outcomes.push(outcome);
        }
    }
    outcomes
}

#[test]
fn typing_and_submit() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, out) = feed(&mut ed, b"ls -l");
    assert!(outcomes.is_empty());
    assert_eq!(out, "ls -l");
    assert_eq!(ed.line(), "ls -l");
    let (outcomes, out) = feed(&mut ed, b"\r");
    assert_eq!(outcomes, vec![submitted("ls -l")]);
    assert_eq!(out, "\r\n");
    assert_eq!(ed.line(), "");
    assert_eq!(history(&ed), ["ls -l"]);
}

#[test]
fn empty_enter_submits_empty_line() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, _) = feed(&mut ed, b"\r");
    assert_eq!(outcomes, vec![submitted("")]);
    assert!(history(&ed).is_empty());
}

#[test]
fn crlf_and_lfcr_count_once() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, out) = feed(&mut ed, b"ab\r\ncd\n\ref\n");
    assert_eq!(
        outcomes,
        vec![submitted("ab"), submitted("cd"), submitted("ef")]
    );
    assert_eq!(out, "ab\r\ncd\r\nef\r\n");
    // The pending LF above would swallow a CR; start afresh. Two presses of a CR-sending Enter
    // key are two lines, as are CRLF CRLF.
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, _) = feed(&mut ed, b"\r\r\r\n\r\n");
    assert_eq!(outcomes, vec![submitted(""); 4]);
    // Only the very next byte pairs up.
    let (outcomes, _) = feed(&mut ed, b"x\ry\n");
    assert_eq!(outcomes, vec![submitted("x"), submitted("y")]);
}

#[test]
fn backspace_at_start_is_harmless() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, out) = feed(&mut ed, b"\x7f\x08\x7f");
    assert!(outcomes.is_empty());
    assert_eq!(out, "");
    assert_eq!(ed.line(), "");
    let (_, out) = feed(&mut ed, b"ab\x7f");
    assert_eq!(ed.line(), "a");
    assert_eq!(out, "ab\x08\x1b[K");
    feed(&mut ed, b"\x08\x08\x08");
    assert_eq!(ed.line(), "");
    feed(&mut ed, b"z");
    assert_eq!(ed.line(), "z");
}

#[test]
fn insert_in_the_middle() {
    let mut ed = LineEditor::new(8, 64);
    feed(&mut ed, b"helo");
    feed(&mut ed, LEFT);
    let (_, out) = feed(&mut ed, b"l");
    assert_eq!(ed.line(), "hello");
    // The new character and the tail are redrawn, then the cursor steps back over the tail.
    assert_eq!(out, "lo\x08");
    feed(&mut ed, &[LEFT, LEFT, LEFT, LEFT, LEFT, LEFT].concat());
    let (_, out) = feed(&mut ed, b">");
    assert_eq!(out, ">hello\x1b[5D");
    let (outcomes, _) = feed(&mut ed, b"\r");
    assert_eq!(outcomes, vec![submitted(">hello")]);
}

#[test]
fn backspace_and_delete_in_the_middle_redraw() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(
        &mut ed,
        &mut term,
        &[b"abcdef", LEFT, LEFT, b"\x7f"].concat(),
    );
    assert_eq!(ed.line(), "abcef");
    feed_checked(&mut ed, &mut term, b"\x1b[3~");
    assert_eq!(ed.line(), "abcf");
    feed_checked(
        &mut ed,
        &mut term,
        &[RIGHT, RIGHT, RIGHT, b"\x1b[3~"].concat(),
    );
    assert_eq!(ed.line(), "abcf");
}

#[test]
fn history_up_down_restores_draft() {
    let mut ed = LineEditor::new(8, 64);
    feed(&mut ed, b"one\rtwo\rthree\r");
    assert_eq!(history(&ed), ["one", "two", "three"]);
    feed(&mut ed, b"dra");
    feed(&mut ed, LEFT);
    feed(&mut ed, UP);
    assert_eq!(ed.line(), "three");
    feed(&mut ed, UP);
    assert_eq!(ed.line(), "two");
    feed(&mut ed, UP);
    assert_eq!(ed.line(), "one");
    // Up at the oldest entry stays there.
    feed(&mut ed, UP);
    assert_eq!(ed.line(), "one");
    feed(&mut ed, DOWN);
    assert_eq!(ed.line(), "two");
    feed(&mut ed, DOWN);
    assert_eq!(ed.line(), "three");
    feed(&mut ed, DOWN);
    assert_eq!(ed.line(), "dra");
    // Down past the draft does nothing.
    feed(&mut ed, DOWN);
    assert_eq!(ed.line(), "dra");
    feed(&mut ed, b"ft");
    assert_eq!(ed.line(), "draft");

    // A recalled entry can be edited and submitted; SS3 keys and Ctrl-P work too.
    feed(&mut ed, b"\x1bOA\x10");
    assert_eq!(ed.line(), "two");
    let (outcomes, _) = feed(&mut ed, b"!\r");
    assert_eq!(outcomes, vec![submitted("two!")]);
    assert_eq!(history(&ed), ["one", "two", "three", "two!"]);
    // The walk starts over from the newest entry, with an empty draft.
    feed(&mut ed, UP);
    assert_eq!(ed.line(), "two!");
    feed(&mut ed, b"\x1bOB");
    assert_eq!(ed.line(), "");
}

#[test]
fn history_walk_redraws_correctly() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(&mut ed, &mut term, b"a much longer command\rshort\r");
    feed_checked(
        &mut ed,
        &mut term,
        &[b"draft text", LEFT, LEFT, UP, UP, DOWN].concat(),
    );
    assert_eq!(ed.line(), "short");
    feed_checked(
        &mut ed,
        &mut term,
        &[UP, LEFT, LEFT, LEFT, DOWN, DOWN].concat(),
    );
    assert_eq!(ed.line(), "draft text");
}

#[test]
fn empty_history_keys_are_harmless() {
    let mut ed = LineEditor::new(8, 64);
    let (_, out) = feed(&mut ed, &[b"x", UP, DOWN].concat());
    assert_eq!(ed.line(), "x");
    assert_eq!(out, "x");
    let mut ed = LineEditor::new(0, 64);
    feed(&mut ed, &[b"a\rb\r", UP].concat());
    assert!(history(&ed).is_empty());
    assert_eq!(ed.line(), "");
}

#[test]
fn history_suppresses_duplicates_and_blank_lines() {
    let mut ed = LineEditor::new(8, 64);
    feed(&mut ed, b"ls\rls\r\r   \rps\rls\rls\r");
    assert_eq!(history(&ed), ["ls", "ps", "ls"]);
}

#[test]
fn history_capacity_drops_oldest() {
    let mut ed = LineEditor::new(3, 64);
    feed(&mut ed, b"a\rb\rc\rd\re\r");
    assert_eq!(history(&ed), ["c", "d", "e"]);
    feed(&mut ed, &[UP, UP, UP, UP].concat());
    assert_eq!(ed.line(), "c");
}

#[test]
fn home_end_delete() {
    let home_keys: [&[u8]; 5] = [b"\x1b[H", b"\x1b[1~", b"\x1bOH", b"\x01", b"\x1b[7~"];
    let end_keys: [&[u8]; 5] = [b"\x1b[F", b"\x1b[4~", b"\x1bOF", b"\x05", b"\x1b[8~"];
    for (home, end) in home_keys.into_iter().zip(end_keys) {
        let mut ed = LineEditor::new(8, 64);
        let mut term = Terminal::default();
        feed_checked(&mut ed, &mut term, &[&b"bcd"[..], home, b"a"].concat());
        assert_eq!(ed.line(), "abcd");
        assert_eq!(ed.cursor, 1);
        feed_checked(&mut ed, &mut term, &[end, b"e"].concat());
        assert_eq!(ed.line(), "abcde");
        feed_checked(&mut ed, &mut term, &[home, b"\x1b[3~"].concat());
        assert_eq!(ed.line(), "bcde");
        // Delete at the end of the line does nothing.
        feed_checked(&mut ed, &mut term, &[end, b"\x1b[3~"].concat());
        assert_eq!(ed.line(), "bcde");
    }
}

#[test]
fn home_and_end_output() {
    let mut ed = LineEditor::new(8, 64);
    feed(&mut ed, b"abcd");
    assert_eq!(feed(&mut ed, b"\x1b[H").1, "\x1b[4D");
    assert_eq!(feed(&mut ed, b"\x1b[F").1, "\x1b[4C");
    // Already there: nothing to write.
    assert_eq!(feed(&mut ed, b"\x1b[F").1, "");
    assert_eq!(feed(&mut ed, LEFT).1, "\x08");
    assert_eq!(feed(&mut ed, RIGHT).1, "\x1b[1C");
    assert_eq!(feed(&mut ed, RIGHT).1, "");
}

#[test]
fn modified_arrows_move_by_word() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(&mut ed, &mut term, b"cat  some file");
    feed_checked(&mut ed, &mut term, b"\x1b[1;5D");
    assert_eq!(ed.cursor, 10);
    feed_checked(&mut ed, &mut term, b"\x1b[1;3D\x1b[1;5D");
    assert_eq!(ed.cursor, 0);
    feed_checked(&mut ed, &mut term, b"\x1b[1;5C");
    assert_eq!(ed.cursor, 3);
    feed_checked(&mut ed, &mut term, b"\x1b[1;5C");
    assert_eq!(ed.cursor, 9);
    // Shift alone is a plain move.
    feed_checked(&mut ed, &mut term, b"\x1b[1;2D");
    assert_eq!(ed.cursor, 8);
}

#[test]
fn unknown_escape_sequences_are_consumed() {
    let junk: [&[u8]; 14] = [
        b"\x1b[5~",
        b"\x1b[6~",
        b"\x1b[99;99X",
        b"\x1bx",
        b"\x1b\x1b[5~",
        b"\x1b[?25h",
        b"\x1b[2A",
        b"\x1b[1;2;3;4;5;6A",
        b"\x1b[ A",
        b"\x1b[15;5~",
        b"\x1bOP",
        b"\x1bOz",
        b"\x1b[3:2~",
        b"\x1b\xc3",
    ];
    for seq in junk {
        let mut ed = LineEditor::new(8, 64);
        let (outcomes, out) = feed(&mut ed, &[b"ab", seq, b"c"].concat());
        assert!(outcomes.is_empty());
        assert_eq!(ed.line(), "abc", "sequence {seq:?}");
        assert_eq!(out, "abc", "sequence {seq:?}");
    }
}

#[test]
fn long_escape_sequence_is_abandoned() {
    let mut ed = LineEditor::new(8, 64);
    let mut seq = vec![0x1b, b'['];
    seq.extend(core::iter::repeat_n(b'1', 200));
    feed(&mut ed, &seq);
    // The decoder gave up and is back to normal input.
    assert!(matches!(ed.escape, Escape::Ground));
    feed(&mut ed, b"\x1b[99999999999999999999A");
    assert_eq!(
        ed.line().len(),
        ed.line().bytes().filter(|&b| b == b'1').count()
    );
    feed(&mut ed, b"\x15x");
    assert_eq!(ed.line(), "x");
}

#[test]
fn control_bytes_interrupt_escape_sequences() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, _) = feed(&mut ed, b"ls\x1b\r");
    assert_eq!(outcomes, vec![submitted("ls")]);
    let (outcomes, _) = feed(&mut ed, b"ls\x1b[1\r");
    assert_eq!(outcomes, vec![submitted("ls")]);
    let (outcomes, _) = feed(&mut ed, b"ls\x1bO\x03");
    assert_eq!(outcomes, vec![Outcome::Interrupted]);
    feed(&mut ed, b"ab\x1b[\x7f");
    assert_eq!(ed.line(), "a");
    // ESC ESC [ D: the first ESC is dropped, the second starts a sequence.
    feed(&mut ed, b"b\x1b\x1b[D");
    assert_eq!(ed.line(), "ab");
    assert_eq!(ed.cursor, 1);
    // A non-ASCII byte abandons a sequence.
    feed(&mut ed, b"\x1b[\xffZ");
    assert_eq!(ed.line(), "aZb");
}

#[test]
fn ctrl_c_interrupts() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, out) = feed(&mut ed, b"rm -rf\x03");
    assert_eq!(outcomes, vec![Outcome::Interrupted]);
    assert_eq!(out, "rm -rf^C\r\n");
    assert_eq!(ed.line(), "");
    assert!(history(&ed).is_empty());
    let (outcomes, _) = feed(&mut ed, b"ok\r");
    assert_eq!(outcomes, vec![submitted("ok")]);
}

#[test]
fn ctrl_u_clears_line() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(
        &mut ed,
        &mut term,
        &[b"some text", LEFT, LEFT, b"\x15"].concat(),
    );
    assert_eq!(ed.line(), "");
    feed_checked(&mut ed, &mut term, b"\x15new");
    assert_eq!(ed.line(), "new");
}

#[test]
fn ctrl_w_deletes_previous_word() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(&mut ed, &mut term, b"echo hello  world  \x17");
    assert_eq!(ed.line(), "echo hello  ");
    feed_checked(&mut ed, &mut term, b"\x17");
    assert_eq!(ed.line(), "echo ");
    feed_checked(
        &mut ed,
        &mut term,
        &[b"big world", LEFT, LEFT, LEFT, b"\x17"].concat(),
    );
    assert_eq!(ed.line(), "echo big rld");
    assert_eq!(ed.cursor, 9);
    feed_checked(&mut ed, &mut term, b"\x01\x17");
    assert_eq!(ed.line(), "echo big rld");
    feed_checked(&mut ed, &mut term, b"\x05\x17\x17\x17\x17");
    assert_eq!(ed.line(), "");
}

#[test]
fn ctrl_d_ends_input_only_on_empty_line() {
    let mut ed = LineEditor::new(8, 64);
    let (outcomes, out) = feed(&mut ed, b"\x04");
    assert_eq!(outcomes, vec![Outcome::EndOfInput]);
    assert_eq!(out, "");
    let mut term = Terminal::default();
    let outcomes = feed_checked(&mut ed, &mut term, &[b"abc", LEFT, LEFT, b"\x04"].concat());
    assert!(outcomes.is_empty());
    assert_eq!(ed.line(), "ac");
    // Still usable after end of input.
    let (outcomes, _) = feed(&mut ed, b"\r");
    assert_eq!(outcomes, vec![submitted("ac")]);
}

#[test]
fn ctrl_k_and_ctrl_l() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    feed_checked(
        &mut ed,
        &mut term,
        &[b"hello world", LEFT, LEFT, b"\x0c"].concat(),
    );
    assert_eq!(ed.line(), "hello world");
    assert_eq!(ed.cursor, 9);
    feed_checked(&mut ed, &mut term, b"\x0b");
    assert_eq!(ed.line(), "hello wor");
    feed_checked(&mut ed, &mut term, b"\x0c\x0b");
    assert_eq!(ed.line(), "hello wor");
}

#[test]
fn other_control_and_non_ascii_bytes_are_ignored() {
    let mut ed = LineEditor::new(8, 64);
    let ignored: Vec<u8> = [0x00, 0x07, 0x09, 0x0f, 0x11, 0x1a, 0x1c, 0x1f]
        .into_iter()
        .chain(0x80..=0xff)
        .collect();
    let (outcomes, out) = feed(&mut ed, &[b"a", &ignored[..], b"b"].concat());
    assert!(outcomes.is_empty());
    assert_eq!(out, "ab");
    assert_eq!(ed.line(), "ab");
}

#[test]
fn max_line_length() {
    let mut ed = LineEditor::new(8, 5);
    let mut term = Terminal::default();
    feed_checked(&mut ed, &mut term, b"abcdefgh");
    assert_eq!(ed.line(), "abcde");
    assert_eq!(term.bells, 3);
    feed_checked(&mut ed, &mut term, &[LEFT, LEFT, b"X\x7fY"].concat());
    assert_eq!(ed.line(), "abYde");
    assert_eq!(term.bells, 4);
    let (outcomes, _) = feed(&mut ed, b"\r");
    assert_eq!(outcomes, vec![submitted("abYde")]);

    let mut ed = LineEditor::new(8, 0);
    let (_, out) = feed(&mut ed, b"ab");
    assert_eq!(out, "\x07\x07");
    assert_eq!(ed.line(), "");
}

#[test]
fn terminal_shows_line_after_edits() {
    let mut ed = LineEditor::new(8, 64);
    let mut term = Terminal::default();
    let script: &[&[u8]] = &[
        b"git comit -m 'x'",
        b"\x1b[H",
        RIGHT,
        RIGHT,
        RIGHT,
        RIGHT,
        RIGHT,
        RIGHT,
        RIGHT,
        b"m",
        b"\x1b[F",
        b"\x7f\x7f\x7f",
        b"fix'",
        b"\x1b[1;5D\x1b[1;5D",
        b"\x17",
        b"\x1b[3~\x1b[3~\x1b[3~",
        b"\x1bOH\x04",
        b"G",
        b"\x1b[4~ --amend",
        b"\x1b[5~\x1b[99;99X\x1bq",
    ];
    for step in script {
        feed_checked(&mut ed, &mut term, step);
    }
    assert_eq!(ed.line(), "Git fix' --amend");
    let outcomes = feed_checked(&mut ed, &mut term, b"\r\n");
    assert_eq!(outcomes, vec![submitted("Git fix' --amend")]);
    assert_eq!(
        term.rows.last().map(Vec::as_slice),
        Some(&b"Git fix' --amend"[..])
    );
}

/// xorshift64, enough randomness for a fuzz loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Random input skewed towards the bytes that matter, so escape sequences, history walks and
/// mid-line edits all happen often.
fn random_byte(rng: &mut Rng) -> u8 {
    const ESCAPE_PARTS: &[u8] = b"\x1b\x1b\x1b[[[OO0123456789;;~~~ABCDHF?:X";
    const CONTROLS: &[u8] = b"\x01\x02\x03\x04\x05\x06\x08\x0b\x0c\x0e\x10\x15\x17\x7f\x7f\x09\x00";
    match rng.next() % 100 {
        0..45 => rng.pick(b"abc xyz-_'\"~[O;012"),
        45..70 => rng.pick(ESCAPE_PARTS),
        70..85 => rng.pick(CONTROLS),
        85..88 => rng.pick(b"\r\n"),
        88..93 => (rng.next() % 0x80) as u8 | 0x80,
        _ => rng.next() as u8,
    }
}

fn fuzz(seed: u64, max_line_len: usize, history_capacity: usize) {
    let mut rng = Rng(seed);
    let mut ed = LineEditor::new(history_capacity, max_line_len);
    let mut term = Terminal::default();
    let mut submits = 0;
    for _ in 0..100_000 {
        let byte = random_byte(&mut rng);
        let mut out = String::new();
        let outcome = ed.feed(byte, &mut out);
        let line = ed.line();
        assert!(line.len() <= max_line_len);
        assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{line:?}");
        assert!(ed.cursor <= line.len());
        if let Outcome::Submitted(submitted) = &outcome {
            assert!(submitted.len() <= max_line_len);
            assert!(submitted.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            submits += 1;
        }
        term.write(&out);
        term.assert_shows(&ed);
    }
    let history = history(&ed);
    assert!(history.len() <= history_capacity);
    assert!(
        history
            .iter()
            .all(|entry| entry.len() <= max_line_len && !entry.trim().is_empty())
    );
    assert!(history.windows(2).all(|pair| pair[0] != pair[1]));
    assert!(submits > 100, "fuzz input too tame: {submits} submits");
}

#[test]
fn random_bytes_never_break_the_editor() {
    fuzz(0x9e37_79b9_7f4a_7c15, 40, 16);
}

#[test]
fn random_bytes_small_limits() {
    fuzz(0x1234_5678_9abc_def1, 3, 1);
    fuzz(0xdead_beef_cafe_f00d, 0, 0);
}

#[test]
fn split_plain_words() {
    assert_eq!(
        split_words("ls -l  /bin"),
        Ok(vec!["ls".into(), "-l".into(), "/bin".into()])
    );
    assert_eq!(
        split_words("  \t lead and trail \t "),
        Ok(vec!["lead".into(), "and".into(), "trail".into()])
    );
}

#[test]
fn split_empty_input() {
    assert_eq!(split_words(""), Ok(vec![]));
    assert_eq!(split_words("   \t "), Ok(vec![]));
}

#[test]
fn split_quotes() {
    assert_eq!(
        split_words(r#"echo "hello world" 'single  quoted'"#),
        Ok(vec![
            "echo".into(),
            "hello world".into(),
            "single  quoted".into()
        ])
    );
    assert_eq!(
        split_words(r#"a"b c"d'e f'g"#),
        Ok(vec!["ab cde fg".into()])
    );
    assert_eq!(
        split_words(r#"x "" '' y"#),
        Ok(vec!["x".into(), "".into(), "".into(), "y".into()])
    );
    assert_eq!(
        split_words(r#""it's" 'say "hi"'"#),
        Ok(vec!["it's".into(), "say \"hi\"".into()])
    );
}

#[test]
fn split_escapes() {
    assert_eq!(split_words(r"a\ b c"), Ok(vec!["a b".into(), "c".into()]));
    assert_eq!(split_words(r#"\"\'\\"#), Ok(vec![r#""'\"#.into()]));
    // Inside double quotes only \" and \\ are escapes.
    assert_eq!(split_words(r#""a\"b\\c\n""#), Ok(vec![r#"a"b\c\n"#.into()]));
    // Inside single quotes backslash is literal.
    assert_eq!(split_words(r"'a\b'"), Ok(vec![r"a\b".into()]));
    assert_eq!(
        split_words(r"trailing\"),
        Err(SplitError::TrailingBackslash)
    );
}

#[test]
fn split_unterminated_quote() {
    assert_eq!(
        split_words(r#"echo "oops"#),
        Err(SplitError::UnterminatedQuote('"'))
    );
    assert_eq!(
        split_words("echo 'oops"),
        Err(SplitError::UnterminatedQuote('\''))
    );
    assert_eq!(
        split_words(r#"echo "oops\"#),
        Err(SplitError::UnterminatedQuote('"'))
    );
    assert_eq!(
        split_words(r#"'a"b"#),
        Err(SplitError::UnterminatedQuote('\''))
    );
    assert_eq!(
        SplitError::UnterminatedQuote('"').to_string(),
        "unterminated \" quote"
    );
}
