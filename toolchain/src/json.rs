//! Just enough JSON for the benchmark protocol: parsing one flat object (string, number, boolean
//! and null values) and writing strings and numbers.

use anyhow::{Result, anyhow, bail};

/// A value of a flat JSON object.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
}

/// Parses `{"key": value, ...}` where no value is an array or object. Keys keep their order.
pub fn parse_flat_object(text: &str) -> Result<Vec<(String, Value)>> {
    let mut parser = Parser {
        chars: text.trim().chars().collect(),
        at: 0,
    };
    let fields = parser.object()?;
    parser.skip_whitespace();
    if parser.at != parser.chars.len() {
        bail!("trailing characters after the object in {text:?}");
    }
    Ok(fields)
}

/// `text` as a JSON string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `value` as a JSON number (`null` if it is not finite, which JSON cannot express).
pub fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "null".to_string()
    }
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn object(&mut self) -> Result<Vec<(String, Value)>> {
        self.expect('{')?;
        let mut fields = Vec::new();
        if self.peek() == Some('}') {
            self.at += 1;
            return Ok(fields);
        }
        loop {
            let key = self.string()?;
            self.expect(':')?;
            fields.push((key, self.value()?));
            match self.next_significant() {
                Some(',') => continue,
                Some('}') => return Ok(fields),
                other => bail!("expected ',' or '}}', found {other:?}"),
            }
        }
    }

    fn value(&mut self) -> Result<Value> {
        match self.peek() {
            Some('"') => Ok(Value::String(self.string()?)),
            Some('t') => self.keyword("true", Value::Bool(true)),
            Some('f') => self.keyword("false", Value::Bool(false)),
            Some('n') => self.keyword("null", Value::Null),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            other => bail!("expected a string, number, boolean or null, found {other:?}"),
        }
    }

    fn string(&mut self) -> Result<String> {
        self.expect('"')?;
        let mut out = String::new();
        loop {
            match self.bump().ok_or_else(|| anyhow!("unterminated string"))? {
                '"' => return Ok(out),
                '\\' => out.push(self.escape()?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char> {
        Ok(
            match self.bump().ok_or_else(|| anyhow!("unterminated escape"))? {
                '"' => '"',
                '\\' => '\\',
                '/' => '/',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'u' => {
                    let hex: String = (0..4).filter_map(|_| self.bump()).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .map_err(|_| anyhow!("bad \\u escape {hex:?}"))?;
                    char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
                other => bail!("unknown escape \\{other}"),
            },
        )
    }

    fn number(&mut self) -> Result<Value> {
        let start = self.at;
        while self
            .chars
            .get(self.at)
            .is_some_and(|c| c.is_ascii_digit() || "+-.eE".contains(*c))
        {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().collect();
        let value = text
            .parse::<f64>()
            .map_err(|_| anyhow!("bad number {text:?}"))?;
        Ok(Value::Number(value))
    }

    fn keyword(&mut self, word: &str, value: Value) -> Result<Value> {
        for expected in word.chars() {
            if self.bump() != Some(expected) {
                bail!("expected {word}");
            }
        }
        Ok(value)
    }

    fn expect(&mut self, wanted: char) -> Result<()> {
        match self.next_significant() {
            Some(c) if c == wanted => Ok(()),
            other => bail!("expected {wanted:?}, found {other:?}"),
        }
    }

    /// The next character that is not whitespace, without consuming it.
    fn peek(&mut self) -> Option<char> {
        self.skip_whitespace();
        self.chars.get(self.at).copied()
    }

    fn next_significant(&mut self) -> Option<char> {
        self.skip_whitespace();
        self.bump()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.at).copied();
        self.at += usize::from(c.is_some());
        c
    }

    fn skip_whitespace(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_flat_object() {
        let fields = parse_flat_object(
            r#" { "name" : "a\"b\u0041", "n": -1.5e3, "ok": true, "none": null, "k": 7 } "#,
        )
        .unwrap();
        assert_eq!(
            fields,
            vec![
                ("name".into(), Value::String("a\"bA".into())),
                ("n".into(), Value::Number(-1500.0)),
                ("ok".into(), Value::Bool(true)),
                ("none".into(), Value::Null),
                ("k".into(), Value::Number(7.0)),
            ]
        );
        assert_eq!(parse_flat_object("{}").unwrap(), vec![]);
    }

    #[test]
    fn rejects_malformed_objects() {
        for bad in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":1} x",
            "{\"a\":[1]}",
            "{\"a\":\"x}",
            "{\"a\":1.2.3}",
        ] {
            assert!(parse_flat_object(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn quotes_and_formats() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
        assert_eq!(number(1.25), "1.25");
        assert_eq!(number(3.0), "3");
        assert_eq!(number(f64::NAN), "null");
    }

    #[test]
    fn round_trips_quoted_strings() {
        let text = "tab\t \"quote\" back\\slash";
        let object = format!("{{\"s\":{}}}", quote(text));
        assert_eq!(
            parse_flat_object(&object).unwrap()[0].1,
            Value::String(text.into())
        );
    }
}
