//! Lexer: expression text to tokens.
//!
//! A path (`payload.items[0]["utm-source"]`) is one token, read without white space inside, so
//! the parser never has to glue paths together and `-` can always be an operator.

use super::ast::{Function, Path, Root, Segment, Span};

/// A token and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What the token is.
    pub kind: TokenKind,
    /// Byte range in the expression.
    pub span: Span,
}

/// The kinds of token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenKind {
    /// A number literal.
    Number(f64),
    /// A string literal, escapes resolved.
    Str(String),
    /// A path into the event.
    Path(Path),
    /// `true` / `false`, any case.
    Bool(bool),
    /// `null`, any case.
    Null,
    /// `AND`, any case.
    And,
    /// `OR`, any case.
    Or,
    /// `NOT`, any case.
    Not,
    /// `contains`, any case.
    Contains,
    /// `matches`, any case.
    Matches,
    /// `in`, any case.
    In,
    /// A name followed by `(`: a function call.
    Name(String),
    /// `[`, opening an array literal.
    LBracket,
    /// `]`.
    RBracket,
    /// `,`.
    Comma,
    /// `(`.
    LParen,
    /// `)`.
    RParen,
    /// `==`.
    Eq,
    /// `!=`.
    Ne,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `+`.
    Plus,
    /// `-`.
    Minus,
    /// `*`.
    Star,
    /// `/`.
    Slash,
    /// `%`.
    Percent,
    /// End of input.
    Eof,
}

impl TokenKind {
    /// How the token reads in a message.
    pub fn describe(&self) -> String {
        match self {
            TokenKind::Number(n) => format!("number {n}"),
            TokenKind::Str(s) => format!("string {s:?}"),
            TokenKind::Path(p) => format!("path `{p}`"),
            TokenKind::Name(n) => format!("`{n}(`"),
            TokenKind::Bool(b) => format!("`{b}`"),
            TokenKind::Null => "`null`".into(),
            TokenKind::And => "`AND`".into(),
            TokenKind::Or => "`OR`".into(),
            TokenKind::Not => "`NOT`".into(),
            TokenKind::Contains => "`contains`".into(),
            TokenKind::Matches => "`matches`".into(),
            TokenKind::In => "`in`".into(),
            TokenKind::LBracket => "`[`".into(),
            TokenKind::RBracket => "`]`".into(),
            TokenKind::Comma => "`,`".into(),
            TokenKind::LParen => "`(`".into(),
            TokenKind::RParen => "`)`".into(),
            TokenKind::Eq => "`==`".into(),
            TokenKind::Ne => "`!=`".into(),
            TokenKind::Gt => "`>`".into(),
            TokenKind::Ge => "`>=`".into(),
            TokenKind::Lt => "`<`".into(),
            TokenKind::Le => "`<=`".into(),
            TokenKind::Plus => "`+`".into(),
            TokenKind::Minus => "`-`".into(),
            TokenKind::Star => "`*`".into(),
            TokenKind::Slash => "`/`".into(),
            TokenKind::Percent => "`%`".into(),
            TokenKind::Eof => "the end of the expression".into(),
        }
    }
}

/// A lexing error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct LexError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

/// Splits an expression into tokens, ending with [`TokenKind::Eof`].
pub fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer { src, bytes: src.as_bytes(), pos: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let done = token.kind == TokenKind::Eof;
        tokens.push(token);
        if done {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_ident_continue(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos + offset).copied()
    }

    fn error(&self, start: usize, end: usize, message: impl Into<String>) -> LexError {
        LexError { span: Span::new(start, end), message: message.into() }
    }

    fn next_token(&mut self) -> Result<Token, LexError> {
        while let Some(c) = self.src[self.pos..].chars().next().filter(|c| c.is_whitespace()) {
            self.pos += c.len_utf8();
        }
        let start = self.pos;
        let Some(b) = self.peek() else {
            return Ok(Token { kind: TokenKind::Eof, span: Span::new(start, start) });
        };
        let kind = match b {
            b'(' => self.single(TokenKind::LParen),
            b')' => self.single(TokenKind::RParen),
            b'[' => self.single(TokenKind::LBracket),
            b']' => self.single(TokenKind::RBracket),
            b',' => self.single(TokenKind::Comma),
            b'+' => self.single(TokenKind::Plus),
            b'-' => self.single(TokenKind::Minus),
            b'*' => self.single(TokenKind::Star),
            b'/' => self.single(TokenKind::Slash),
            b'%' => self.single(TokenKind::Percent),
            b'=' | b'!' | b'<' | b'>' => self.operator(b)?,
            b'"' | b'\'' => TokenKind::Str(self.string()?),
            b'0'..=b'9' => TokenKind::Number(self.number()?),
            b if is_ident_start(b) => self.word()?,
            _ => {
                let c = self.src[start..].chars().next().unwrap_or('?');
                let hint = match c {
                    '&' => " (write AND)",
                    '|' => " (write OR)",
                    '.' => " (numbers start with a digit: write 0.5)",
                    _ => "",
                };
                return Err(self.error(start, start + c.len_utf8(), format!("unexpected character {c:?}{hint}")));
            }
        };
        Ok(Token { kind, span: Span::new(start, self.pos) })
    }

    fn single(&mut self, kind: TokenKind) -> TokenKind {
        self.pos += 1;
        kind
    }

    fn operator(&mut self, first: u8) -> Result<TokenKind, LexError> {
        let start = self.pos;
        let followed_by_eq = self.peek_at(1) == Some(b'=');
        self.pos += if followed_by_eq { 2 } else { 1 };
        Ok(match (first, followed_by_eq) {
            (b'=', true) => TokenKind::Eq,
            (b'!', true) => TokenKind::Ne,
            (b'<', true) => TokenKind::Le,
            (b'>', true) => TokenKind::Ge,
            (b'<', false) => TokenKind::Lt,
            (b'>', false) => TokenKind::Gt,
            (b'=', false) => return Err(self.error(start, start + 1, "`=` is not an operator (write `==`)")),
            _ => return Err(self.error(start, start + 1, "`!` is not an operator (write `!=` or NOT)")),
        })
    }

    /// Reads a quoted string. `\"`, `\'` and `\\` are escapes; any other backslash stays, so
    /// regexes read naturally (`'\d+\.\d'`).
    fn string(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        let Some(quote) = self.peek() else {
            return Err(self.error(start, start, "expected a string"));
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chunk_start = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.error(start, self.pos, "unterminated string")),
                Some(b) if b == quote => {
                    out.push_str(&self.src[chunk_start..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') if matches!(self.peek_at(1), Some(b'"' | b'\'' | b'\\')) => {
                    out.push_str(&self.src[chunk_start..self.pos]);
                    self.pos += 1;
                    chunk_start = self.pos;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Reads `12`, `3.5`, `5.`, `1e3`, `2.5E-3`.
    fn number(&mut self) -> Result<f64, LexError> {
        let start = self.pos;
        self.digits();
        if self.peek() == Some(b'.') && !self.peek_at(1).is_some_and(is_ident_start) {
            self.pos += 1;
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.peek_at(1), Some(b'+' | b'-')));
            if self.peek_at(1 + sign).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1 + sign;
                self.digits();
            }
        }
        while self.peek().is_some_and(|b| is_ident_continue(b) || b == b'.') {
            self.pos += 1;
        }
        let text = &self.src[start..self.pos];
        text.parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .ok_or_else(|| self.error(start, self.pos, format!("invalid number `{text}`")))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_ident_continue) {
            self.pos += 1;
        }
        &self.src[start..self.pos]
    }

    /// A keyword, a literal word, or a path. A keyword stays a keyword when `[` follows it
    /// (`x in['a']`): only `payload`, `meta` and `event` start paths.
    fn word(&mut self) -> Result<TokenKind, LexError> {
        let start = self.pos;
        let word = self.ident();
        let keyword = match word.to_ascii_lowercase().as_str() {
            "and" => Some(TokenKind::And),
            "or" => Some(TokenKind::Or),
            "not" => Some(TokenKind::Not),
            "contains" => Some(TokenKind::Contains),
            "matches" => Some(TokenKind::Matches),
            "in" => Some(TokenKind::In),
            "true" => Some(TokenKind::Bool(true)),
            "false" => Some(TokenKind::Bool(false)),
            "null" => Some(TokenKind::Null),
            _ => None,
        };
        if let Some(keyword) = keyword.filter(|_| self.peek() != Some(b'.')) {
            return Ok(keyword);
        }
        let root = match word {
            "payload" => Root::Payload,
            "meta" => Root::Meta,
            "event" => Root::Event,
            "member" => Root::Member,
            "original" => Root::Original,
            _ if self.src[self.pos..].trim_start().starts_with('(') => return Ok(TokenKind::Name(word.to_owned())),
            _ => {
                let message = match Function::parse(word) {
                    Some(function) => format!("`{word}` is a function: write {}()", function.name()),
                    None => format!("unknown name `{word}`: a path starts with payload, meta, event or member"),
                };
                return Err(self.error(start, self.pos, message));
            }
        };
        let segments = self.segments()?;
        Ok(TokenKind::Path(Path::new(root, segments).map_err(|message| self.error(start, self.pos, message))?))
    }

    fn segments(&mut self) -> Result<Vec<Segment>, LexError> {
        let mut segments = Vec::new();
        loop {
            match self.peek() {
                Some(b'.') => {
                    let dot = self.pos;
                    self.pos += 1;
                    let key = self.ident();
                    if key.is_empty() {
                        return Err(self.error(
                            dot,
                            self.pos + 1,
                            "expected a key after `.` (use [\"...\"] for other characters)",
                        ));
                    }
                    segments.push(Segment::Key(key.to_owned()));
                }
                Some(b'[') => {
                    let open = self.pos;
                    self.pos += 1;
                    let segment = match self.peek() {
                        Some(b'"' | b'\'') => Segment::Key(self.string()?),
                        Some(b'0'..=b'9') => {
                            let digits_start = self.pos;
                            self.digits();
                            let text = &self.src[digits_start..self.pos];
                            let index = text.parse::<usize>().map_err(|_| {
                                self.error(digits_start, self.pos, format!("index `{text}` is too large"))
                            })?;
                            Segment::Index(index)
                        }
                        _ => return Err(self.error(open, self.pos, "expected an index or a quoted key after `[`")),
                    };
                    if self.peek() != Some(b']') {
                        return Err(self.error(open, self.pos, "expected `]`"));
                    }
                    self.pos += 1;
                    segments.push(segment);
                }
                _ => return Ok(segments),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn minus_is_always_an_operator() {
        assert_eq!(
            kinds("5-3"),
            vec![TokenKind::Number(5.0), TokenKind::Minus, TokenKind::Number(3.0), TokenKind::Eof]
        );
        let k = kinds("payload.n>-5");
        assert!(matches!(k[0], TokenKind::Path(_)));
        assert_eq!(k[1..], [TokenKind::Gt, TokenKind::Minus, TokenKind::Number(5.0), TokenKind::Eof]);
    }

    #[test]
    fn numbers() {
        assert_eq!(kinds("12 3.5 1e3 2.5E-3 5.")[..5], [12.0, 3.5, 1000.0, 0.0025, 5.0].map(TokenKind::Number));
        assert!(tokenize("1.2.3").unwrap_err().message.contains("invalid number `1.2.3`"));
        assert!(tokenize("0x10").is_err());
    }

    #[test]
    fn strings_keep_unknown_escapes() {
        assert_eq!(
            kinds(r#"'a\"b' "\d+\.\\" 'it\'s'"#)[..3],
            [TokenKind::Str("a\"b".into()), TokenKind::Str(r"\d+\.\".into()), TokenKind::Str("it's".into())]
        );
        let err = tokenize("'open").unwrap_err();
        assert_eq!((err.span.start, err.message.as_str()), (0, "unterminated string"));
    }

    #[test]
    fn keywords_any_case() {
        assert_eq!(
            kinds("and Or NOT Contains MATCHES True false NULL")[..8],
            [
                TokenKind::And,
                TokenKind::Or,
                TokenKind::Not,
                TokenKind::Contains,
                TokenKind::Matches,
                TokenKind::Bool(true),
                TokenKind::Bool(false),
                TokenKind::Null
            ]
        );
    }

    #[test]
    fn paths() {
        let k = kinds(r#"payload.items[0]["utm-source"].sku"#);
        let TokenKind::Path(p) = &k[0] else { panic!() };
        assert_eq!(p.to_string(), r#"payload.items[0]["utm-source"].sku"#);
        assert!(tokenize("amount > 1").unwrap_err().message.contains("unknown name `amount`"));
        assert!(tokenize("a && b").is_err());
    }
}
