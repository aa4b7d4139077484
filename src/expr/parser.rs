//! Parser: tokens to a syntax tree, by precedence climbing.
//!
//! Loosest first: `OR`; `AND`; `NOT`; comparisons (not chainable); `+ -`; `* / %`; unary `-`.

use super::ast::{BinaryOp, Expr, Function, Literal, NEG_PRECEDENCE, NOT_PRECEDENCE, Span, UnaryOp};
use super::lexer::{LexError, Token, TokenKind, tokenize};

/// A syntax error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong.
    pub message: String,
    /// For an unclosed `(`: where it was opened.
    pub opened_at: Option<Span>,
}

impl ParseError {
    fn new(span: Span, message: impl Into<String>) -> Self {
        ParseError { span, message: message.into(), opened_at: None }
    }
}

impl From<LexError> for ParseError {
    fn from(e: LexError) -> Self {
        ParseError::new(e.span, e.message)
    }
}

/// Deepest nesting of parentheses and prefix operators, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// Most binary operators in one expression; with [`MAX_DEPTH`] this bounds the tree's depth.
pub const MAX_OPERATORS: usize = 256;

/// Parses a whole expression.
///
/// ```
/// use fluxflow::expr::parser::parse;
/// let tree = parse("payload.amount > 1000 AND NOT payload.vip").unwrap();
/// assert_eq!(tree.to_string(), "payload.amount > 1000 AND NOT payload.vip");
/// assert!(parse("1 < 2 < 3").is_err());
/// ```
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser { tokens, pos: 0, depth: 0, operators: 0 };
    let expr = parser.expression(0)?;
    let next = parser.peek();
    if next.kind != TokenKind::Eof {
        let message = match next.kind {
            TokenKind::RParen => "unmatched `)`".to_owned(),
            _ => format!("unexpected {} after a complete expression (missing AND/OR?)", next.kind.describe()),
        };
        return Err(ParseError::new(next.span, message));
    }
    Ok(expr)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    operators: usize,
}

fn binary_op(kind: &TokenKind) -> Option<BinaryOp> {
    Some(match kind {
        TokenKind::Or => BinaryOp::Or,
        TokenKind::And => BinaryOp::And,
        TokenKind::Eq => BinaryOp::Eq,
        TokenKind::Ne => BinaryOp::Ne,
        TokenKind::Gt => BinaryOp::Gt,
        TokenKind::Ge => BinaryOp::Ge,
        TokenKind::Lt => BinaryOp::Lt,
        TokenKind::Le => BinaryOp::Le,
        TokenKind::Contains => BinaryOp::Contains,
        TokenKind::Matches => BinaryOp::Matches,
        TokenKind::In => BinaryOp::In,
        TokenKind::Plus => BinaryOp::Add,
        TokenKind::Minus => BinaryOp::Sub,
        TokenKind::Star => BinaryOp::Mul,
        TokenKind::Slash => BinaryOp::Div,
        TokenKind::Percent => BinaryOp::Rem,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> &Token {
        // `tokenize` always ends with Eof, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    /// The binary operator that comes next, and how many tokens it takes (`not in` takes two).
    fn peek_operator(&self) -> Option<(BinaryOp, usize)> {
        let next = &self.peek().kind;
        if *next == TokenKind::Not {
            let after = self.tokens.get(self.pos + 1).map(|t| &t.kind);
            return (after == Some(&TokenKind::In)).then_some((BinaryOp::NotIn, 2));
        }
        binary_op(next).map(|op| (op, 1))
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        token
    }

    fn nest(&mut self, span: Span) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::new(span, format!("expression nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// Parses operators binding tighter than `min_precedence`.
    fn expression(&mut self, min_precedence: u8) -> Result<Expr, ParseError> {
        let mut left = self.prefix()?;
        while let Some((op, tokens)) = self.peek_operator() {
            let precedence = op.precedence();
            if precedence <= min_precedence {
                break;
            }
            let mut op_token = self.advance();
            if tokens == 2 {
                op_token.span = op_token.span.to(self.advance().span);
            }
            self.operators += 1;
            if self.operators > MAX_OPERATORS {
                return Err(ParseError::new(
                    op_token.span,
                    format!("expression has more than {MAX_OPERATORS} operators"),
                ));
            }
            let right = self.expression(precedence)?;
            if op.is_comparison() {
                if let Some((next, _)) = self.peek_operator().filter(|(n, _)| n.is_comparison()) {
                    return Err(ParseError::new(
                        self.peek().span,
                        format!(
                            "comparisons cannot be chained: `{}` after `{}` (join them with AND)",
                            next.symbol(),
                            op.symbol()
                        ),
                    ));
                }
            }
            let span = left.span().to(right.span()).to(op_token.span);
            left = Expr::Binary(op, Box::new(left), Box::new(right), span);
        }
        Ok(left)
    }

    fn prefix(&mut self) -> Result<Expr, ParseError> {
        let token = self.advance();
        let span = token.span;
        match token.kind {
            TokenKind::Number(n) => Ok(Expr::Literal(Literal::Number(n), span)),
            TokenKind::Str(s) => Ok(Expr::Literal(Literal::Str(s), span)),
            TokenKind::Bool(b) => Ok(Expr::Literal(Literal::Bool(b), span)),
            TokenKind::Null => Ok(Expr::Literal(Literal::Null, span)),
            TokenKind::Path(p) => Ok(Expr::Path(p, span)),
            TokenKind::Name(name) => self.call(&name, span),
            TokenKind::LBracket => {
                self.nest(span)?;
                let (items, close) = self.array_items(span)?;
                self.depth -= 1;
                Ok(Expr::Literal(Literal::Array(items), span.to(close)))
            }
            TokenKind::Not => self.unary(UnaryOp::Not, NOT_PRECEDENCE, span),
            TokenKind::Minus => self.unary(UnaryOp::Neg, NEG_PRECEDENCE - 1, span),
            TokenKind::LParen => {
                self.nest(span)?;
                let inner = self.expression(0)?;
                self.depth -= 1;
                let close = self.advance();
                if close.kind != TokenKind::RParen {
                    return Err(ParseError {
                        span: close.span,
                        message: format!("expected `)` to close the `(`, found {}", close.kind.describe()),
                        opened_at: Some(span),
                    });
                }
                // Parentheses only group: the tree keeps the inner node, with the wider span.
                Ok(with_span(inner, span.to(close.span)))
            }
            TokenKind::Eof => Err(ParseError::new(span, "expected a value, found the end of the expression")),
            other => Err(ParseError::new(span, format!("expected a value, found {}", other.describe()))),
        }
    }

    /// The elements of an array literal after its `[`, up to and with the `]` (whose span is
    /// returned). Elements are literals: numbers (a leading `-` allowed), strings, booleans,
    /// `null` and arrays.
    fn array_items(&mut self, open: Span) -> Result<(Vec<Literal>, Span), ParseError> {
        let mut items = Vec::new();
        if self.peek().kind == TokenKind::RBracket {
            return Ok((items, self.advance().span));
        }
        loop {
            items.push(self.array_item()?);
            let token = self.advance();
            match token.kind {
                TokenKind::Comma => {}
                TokenKind::RBracket => return Ok((items, token.span)),
                other => {
                    return Err(ParseError {
                        span: token.span,
                        message: format!("expected `,` or `]` in the list, found {}", other.describe()),
                        opened_at: Some(open),
                    });
                }
            }
        }
    }

    fn array_item(&mut self) -> Result<Literal, ParseError> {
        let token = self.advance();
        Ok(match token.kind {
            TokenKind::Number(n) => Literal::Number(n),
            TokenKind::Minus => match self.advance().kind {
                TokenKind::Number(n) => Literal::Number(-n),
                _ => return Err(ParseError::new(token.span, "`-` in a list must be followed by a number")),
            },
            TokenKind::Str(s) => Literal::Str(s),
            TokenKind::Bool(b) => Literal::Bool(b),
            TokenKind::Null => Literal::Null,
            TokenKind::LBracket => {
                self.nest(token.span)?;
                let (items, _) = self.array_items(token.span)?;
                self.depth -= 1;
                Literal::Array(items)
            }
            other => {
                let message = format!(
                    "a list holds literal values (numbers, strings, true, false, null), found {}",
                    other.describe()
                );
                return Err(ParseError::new(token.span, message));
            }
        })
    }

    /// A function call after its name: `(`, the arguments separated by `,`, `)`. The name must
    /// be a known function, called with as many arguments as it takes.
    fn call(&mut self, name: &str, name_span: Span) -> Result<Expr, ParseError> {
        let Some(function) = Function::parse(name) else {
            let names: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            let hint = crate::suggest::suggestion(&name.to_ascii_lowercase(), &names);
            return Err(ParseError::new(name_span, format!("unknown function `{name}`{hint}")));
        };
        let open = self.advance().span;
        self.nest(open)?;
        let mut args = Vec::new();
        let close = if self.peek().kind == TokenKind::RParen {
            self.advance().span
        } else {
            loop {
                args.push(self.expression(0)?);
                let token = self.advance();
                match token.kind {
                    TokenKind::Comma => {}
                    TokenKind::RParen => break token.span,
                    other => {
                        return Err(ParseError {
                            span: token.span,
                            message: format!("expected `,` or `)` after an argument, found {}", other.describe()),
                            opened_at: Some(open),
                        });
                    }
                }
            }
        };
        self.depth -= 1;
        let span = name_span.to(close);
        let (least, most) = function.arity();
        if args.len() < least || args.len() > most {
            let takes = match (least, most) {
                (0, 0) => "no arguments".to_owned(),
                (1, 1) => "one argument".to_owned(),
                (n, usize::MAX) => format!("{n} or more arguments"),
                (n, m) => format!("{n} to {m} arguments"),
            };
            let message = format!("{}() takes {takes}, got {}", function.name(), args.len());
            return Err(ParseError::new(span, message));
        }
        Ok(Expr::Call(function, args, span))
    }

    fn unary(&mut self, op: UnaryOp, operand_precedence: u8, span: Span) -> Result<Expr, ParseError> {
        self.nest(span)?;
        let operand = self.expression(operand_precedence)?;
        self.depth -= 1;
        let span = span.to(operand.span());
        Ok(Expr::Unary(op, Box::new(operand), span))
    }
}

fn with_span(expr: Expr, span: Span) -> Expr {
    match expr {
        Expr::Literal(l, _) => Expr::Literal(l, span),
        Expr::Path(p, _) => Expr::Path(p, span),
        Expr::Unary(op, e, _) => Expr::Unary(op, e, span),
        Expr::Binary(op, l, r, _) => Expr::Binary(op, l, r, span),
        Expr::Call(f, args, _) => Expr::Call(f, args, span),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sexpr(src: &str) -> String {
        parse(src).unwrap().to_sexpr()
    }

    fn error(src: &str) -> (u32, String) {
        let e = parse(src).unwrap_err();
        (e.span.start, e.message)
    }

    #[test]
    fn precedence_loosest_first() {
        assert_eq!(
            sexpr("payload.a == 1 OR payload.b == 2 AND NOT payload.c > 3"),
            "(OR (== payload.a 1.0) (AND (== payload.b 2.0) (NOT (> payload.c 3.0))))"
        );
        assert_eq!(sexpr("payload.a + 2 * 3 - 1 > 4"), "(> (- (+ payload.a (* 2.0 3.0)) 1.0) 4.0)");
        assert_eq!(sexpr("-payload.a * 2 % 3"), "(% (* (- payload.a) 2.0) 3.0)");
        assert_eq!(sexpr("payload.n>-5"), "(> payload.n (- 5.0))");
        assert_eq!(sexpr("payload.amount-5"), "(- payload.amount 5.0)");
    }

    #[test]
    fn parentheses_group_anything() {
        assert_eq!(sexpr("(payload.n) > 1"), "(> payload.n 1.0)");
        assert_eq!(sexpr("(payload.a + 1) * 2"), "(* (+ payload.a 1.0) 2.0)");
        assert_eq!(sexpr("NOT (payload.a OR payload.b)"), "(NOT (OR payload.a payload.b))");
        assert_eq!(sexpr("((((true))))"), "true");
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            sexpr("payload.t CONTAINS 'x' and payload.e Matches 'y'"),
            "(AND (contains payload.t \"x\") (matches payload.e \"y\"))"
        );
    }

    #[test]
    fn errors_point_at_the_column() {
        assert_eq!(error("payload.a < payload.b < 3").0, 22);
        assert!(error("payload.a < payload.b < 3").1.contains("cannot be chained"));
        assert_eq!(
            error("payload.amount 1000"),
            (15, "unexpected number 1000 after a complete expression (missing AND/OR?)".into())
        );
        assert_eq!(error(""), (0, "expected a value, found the end of the expression".into()));
        assert_eq!(error("(payload.a > 1").1, "expected `)` to close the `(`, found the end of the expression");
        assert_eq!(error("payload.a > 1)").1, "unmatched `)`");
        assert_eq!(error("payload.a > AND").0, 12);
    }

    #[test]
    fn lists_and_membership() {
        assert_eq!(sexpr("payload.c in ['a', \"b\"]"), "(in payload.c [\"a\" \"b\"])");
        assert_eq!(sexpr("payload.c NOT IN [1, -2.5, [true, null]]"), "(not in payload.c [1.0 -2.5 [true null]])");
        assert_eq!(sexpr("payload.c in[]"), "(in payload.c [])");
        assert_eq!(sexpr("NOT payload.c in [1] AND true"), "(AND (NOT (in payload.c [1.0])) true)");
        assert!(error("payload.c in [payload.d]").1.contains("a list holds literal values"));
        assert!(error("payload.c in [1 2]").1.contains("expected `,` or `]`"));
        assert!(error("payload.c in [1,]").1.contains("a list holds literal values"));
        assert!(error("payload.c in [1] in [2]").1.contains("cannot be chained"));
        assert_eq!(error("payload.c not 1").1, "unexpected `NOT` after a complete expression (missing AND/OR?)");
    }

    #[test]
    fn depth_is_bounded() {
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        assert!(error(&deep).1.contains("deeper than"));
        let nots = format!("{}true", "NOT ".repeat(100));
        assert!(error(&nots).1.contains("deeper than"));
    }
}
