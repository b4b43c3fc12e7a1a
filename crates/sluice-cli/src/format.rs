//! `--format` strings for `sluice topic consume`, like kcat's `-f`.
//!
//! | token | output                                   |
//! |-------|------------------------------------------|
//! | `%k`  | key (empty when null)                    |
//! | `%v`  | value (empty when null)                  |
//! | `%p`  | partition                                |
//! | `%o`  | offset                                   |
//! | `%t`  | timestamp, ms since the epoch            |
//! | `%h`  | headers as `name=value` joined with `,`  |
//! | `%%`  | a literal `%`                            |
//! | `\n` `\t` `\r` `\\` | newline, tab, carriage return, backslash |
//!
//! Anything else is copied as is; an unknown `%x` or `\x` is an error.

use std::io::Write;

use sluice_client::ConsumerRecord;

/// One piece of a parsed format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// Literal bytes.
    Literal(Vec<u8>),
    /// `%k`.
    Key,
    /// `%v`.
    Value,
    /// `%p`.
    Partition,
    /// `%o`.
    Offset,
    /// `%t`.
    Timestamp,
    /// `%h`.
    Headers,
}

/// The default: the value and a newline.
pub const DEFAULT_FORMAT: &str = "%v\\n";

/// Parses a format string.
pub fn parse(format: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut lit = Vec::new();
    let mut chars = format.chars();
    let flush = |lit: &mut Vec<u8>, tokens: &mut Vec<Token>| {
        if !lit.is_empty() {
            tokens.push(Token::Literal(std::mem::take(lit)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let t = match chars.next() {
                    Some('k') => Token::Key,
                    Some('v') => Token::Value,
                    Some('p') => Token::Partition,
                    Some('o') => Token::Offset,
                    Some('t') => Token::Timestamp,
                    Some('h') => Token::Headers,
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    Some(other) => {
                        return Err(format!(
                            "unknown format specifier %{other} (use %k %v %p %o %t %h or %%)"
                        ))
                    }
                    None => return Err("format ends with a lone %".to_string()),
                };
                flush(&mut lit, &mut tokens);
                tokens.push(t);
            }
            '\\' => match chars.next() {
                Some('n') => lit.push(b'\n'),
                Some('t') => lit.push(b'\t'),
                Some('r') => lit.push(b'\r'),
                Some('\\') => lit.push(b'\\'),
                Some(other) => {
                    return Err(format!(
                        "unknown escape \\{other} (use \\n \\t \\r or \\\\)"
                    ))
                }
                None => return Err("format ends with a lone \\".to_string()),
            },
            c => {
                let mut buf = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    flush(&mut lit, &mut tokens);
    Ok(tokens)
}

/// Writes one record according to `tokens`.
pub fn write_record(
    out: &mut impl Write,
    tokens: &[Token],
    r: &ConsumerRecord,
) -> std::io::Result<()> {
    for t in tokens {
        match t {
            Token::Literal(b) => out.write_all(b)?,
            Token::Key => out.write_all(r.key.as_deref().unwrap_or_default())?,
            Token::Value => out.write_all(r.value.as_deref().unwrap_or_default())?,
            Token::Partition => write!(out, "{}", r.partition)?,
            Token::Offset => write!(out, "{}", r.offset)?,
            Token::Timestamp => write!(out, "{}", r.timestamp)?,
            Token::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(k.as_bytes())?;
                    out.write_all(b"=")?;
                    out.write_all(v)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn record() -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 3,
            offset: 42,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![
                ("a".into(), Bytes::from_static(b"1")),
                ("b".into(), Bytes::from_static(b"2")),
            ],
        }
    }

    fn render(f: &str) -> String {
        let tokens = parse(f).unwrap();
        let mut out = Vec::new();
        write_record(&mut out, &tokens, &record()).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_every_token() {
        assert_eq!(
            parse("%k=%v %p:%o@%t [%h]\\n").unwrap(),
            vec![
                Token::Key,
                Token::Literal(b"=".to_vec()),
                Token::Value,
                Token::Literal(b" ".to_vec()),
                Token::Partition,
                Token::Literal(b":".to_vec()),
                Token::Offset,
                Token::Literal(b"@".to_vec()),
                Token::Timestamp,
                Token::Literal(b" [".to_vec()),
                Token::Headers,
                Token::Literal(b"]\n".to_vec()),
            ]
        );
    }

    #[test]
    fn renders_like_kcat() {
        assert_eq!(render(DEFAULT_FORMAT), "hello\n");
        assert_eq!(render("%k\\t%v\\n"), "k1\thello\n");
        assert_eq!(render("%p/%o %t %h"), "3/42 1700000000000 a=1,b=2");
        assert_eq!(render("100%% \\\\ é"), "100% \\ é");
    }

    #[test]
    fn null_key_prints_nothing() {
        let tokens = parse("[%k]").unwrap();
        let mut r = record();
        r.key = None;
        let mut out = Vec::new();
        write_record(&mut out, &tokens, &r).unwrap();
        assert_eq!(out, b"[]");
    }

    #[test]
    fn rejects_unknown_specifiers() {
        assert!(parse("%x").unwrap_err().contains("%x"));
        assert!(parse("abc%").is_err());
        assert!(parse("\\q").unwrap_err().contains("\\q"));
        assert!(parse("a\\").is_err());
    }
}
