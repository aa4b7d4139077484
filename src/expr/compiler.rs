//! Compiler: a syntax tree to the form the evaluator runs.
//!
//! Paths are resolved to their root, regexes are built once, and every operand whose type is
//! fixed at load (a literal, an arithmetic result, a comparison) is checked against its operator,
//! so `payload.total > 'ten'` or `payload.n * 2` as a condition are load errors, not silent
//! unknowns at run time.

use regex::{Regex, RegexBuilder};

use super::ast::{BinaryOp, Expr, Literal, Path, Span, UnaryOp};

/// What an expression is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A condition: must give true or false.
    Condition,
    /// A points formula: must give a number.
    Formula,
}

/// A compile error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

/// Largest compiled regex, in bytes of the compiled program.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Deepest nesting inside a regex.
pub const REGEX_NEST_LIMIT: u32 = 64;

/// A literal value of the compiled form.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    /// A number.
    Number(f64),
    /// A string.
    Str(Box<str>),
    /// A boolean.
    Bool(bool),
    /// `null`.
    Null,
}

/// Comparison operators of the compiled form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
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
}

/// Arithmetic operators of the compiled form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
}

/// A node of the compiled form; each keeps its span for the reason of an unknown.
#[derive(Debug, Clone)]
pub enum Node {
    /// A literal.
    Const(Const),
    /// A path into the event.
    Path(Path, Span),
    /// Unary minus.
    Neg(Box<Node>, Span),
    /// `+ - * / %`.
    Arith(ArithOp, Box<Node>, Box<Node>, Span),
    /// `== != > >= < <=`.
    Compare(CmpOp, Box<Node>, Box<Node>, Span),
    /// `contains`.
    Contains(Box<Node>, Box<Node>, Span),
    /// `matches`, with its regex built.
    Matches(Box<Node>, Regex, Span),
    /// `AND`.
    And(Box<Node>, Box<Node>),
    /// `OR`.
    Or(Box<Node>, Box<Node>),
    /// `NOT`.
    Not(Box<Node>, Span),
}

/// What is known of a node's type at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaticType {
    Bool,
    Number,
    Str,
    Null,
    /// A path: anything, known only at run time.
    Any,
}

impl StaticType {
    fn noun(self) -> &'static str {
        match self {
            StaticType::Bool => "a condition (true or false)",
            StaticType::Number => "a number",
            StaticType::Str => "a string",
            StaticType::Null => "null",
            StaticType::Any => "a value",
        }
    }
}

/// Compiles a parsed expression for a purpose.
pub fn compile(expr: &Expr, purpose: Purpose) -> Result<Node, CompileError> {
    let (node, ty) = compile_node(expr)?;
    let fits = match purpose {
        Purpose::Condition => matches!(ty, StaticType::Bool | StaticType::Any),
        Purpose::Formula => matches!(ty, StaticType::Number | StaticType::Any),
    };
    if !fits {
        let message = match purpose {
            Purpose::Condition => format!("a condition must be true or false, but this expression is {}", ty.noun()),
            Purpose::Formula => format!("a formula must give a number, but this expression is {}", ty.noun()),
        };
        return Err(CompileError { span: expr.span(), message });
    }
    Ok(node)
}

fn expect(operand: &Expr, ty: StaticType, allowed: &[StaticType], what: &str) -> Result<(), CompileError> {
    if ty == StaticType::Any || allowed.contains(&ty) {
        return Ok(());
    }
    Err(CompileError { span: operand.span(), message: format!("{what}, but `{operand}` is {}", ty.noun()) })
}

fn compile_node(expr: &Expr) -> Result<(Node, StaticType), CompileError> {
    use StaticType as T;
    Ok(match expr {
        Expr::Literal(lit, _) => match lit {
            Literal::Number(n) => (Node::Const(Const::Number(*n)), T::Number),
            Literal::Str(s) => (Node::Const(Const::Str(s.as_str().into())), T::Str),
            Literal::Bool(b) => (Node::Const(Const::Bool(*b)), T::Bool),
            Literal::Null => (Node::Const(Const::Null), T::Null),
        },
        Expr::Path(path, span) => (Node::Path(path.clone(), *span), T::Any),
        Expr::Unary(UnaryOp::Neg, operand, span) => {
            let (node, ty) = compile_node(operand)?;
            expect(operand, ty, &[T::Number], "unary `-` needs a number")?;
            (Node::Neg(Box::new(node), *span), T::Number)
        }
        Expr::Unary(UnaryOp::Not, operand, span) => {
            let (node, ty) = compile_node(operand)?;
            expect(operand, ty, &[T::Bool], "`NOT` needs a condition")?;
            (Node::Not(Box::new(node), *span), T::Bool)
        }
        Expr::Binary(op, left, right, span) => compile_binary(*op, left, right, *span)?,
    })
}

fn compile_binary(op: BinaryOp, left: &Expr, right: &Expr, span: Span) -> Result<(Node, StaticType), CompileError> {
    use StaticType as T;
    if op == BinaryOp::Matches {
        let (subject, ty) = compile_node(left)?;
        expect(left, ty, &[T::Str], "`matches` needs a string to search")?;
        let Expr::Literal(Literal::Str(pattern), _) = right else {
            return Err(CompileError {
                span: right.span(),
                message: "`matches` needs a string literal pattern, such as 'LOY-[0-9]+'".into(),
            });
        };
        let regex = build_regex(pattern).map_err(|message| CompileError { span: right.span(), message })?;
        return Ok((Node::Matches(Box::new(subject), regex, span), T::Bool));
    }
    let (l, lt) = compile_node(left)?;
    let (r, rt) = compile_node(right)?;
    let (l, r) = (Box::new(l), Box::new(r));
    let symbol = op.symbol();
    Ok(match op {
        BinaryOp::And | BinaryOp::Or => {
            let what = format!("`{symbol}` joins conditions");
            expect(left, lt, &[T::Bool], &what)?;
            expect(right, rt, &[T::Bool], &what)?;
            let node = if op == BinaryOp::And { Node::And(l, r) } else { Node::Or(l, r) };
            (node, T::Bool)
        }
        BinaryOp::Eq | BinaryOp::Ne => {
            let cmp = if op == BinaryOp::Eq { CmpOp::Eq } else { CmpOp::Ne };
            (Node::Compare(cmp, l, r, span), T::Bool)
        }
        BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => {
            let what = format!("`{symbol}` compares numbers");
            expect(left, lt, &[T::Number], &what)?;
            expect(right, rt, &[T::Number], &what)?;
            let cmp = match op {
                BinaryOp::Gt => CmpOp::Gt,
                BinaryOp::Ge => CmpOp::Ge,
                BinaryOp::Lt => CmpOp::Lt,
                _ => CmpOp::Le,
            };
            (Node::Compare(cmp, l, r, span), T::Bool)
        }
        BinaryOp::Contains => {
            expect(left, lt, &[T::Str], "`contains` searches a string or a list")?;
            if lt == T::Str {
                expect(right, rt, &[T::Str], "`contains` on a string looks for a string")?;
            }
            (Node::Contains(l, r, span), T::Bool)
        }
        _ => {
            let what = format!("`{symbol}` needs numbers");
            expect(left, lt, &[T::Number], &what)?;
            expect(right, rt, &[T::Number], &what)?;
            let arith = match op {
                BinaryOp::Add => ArithOp::Add,
                BinaryOp::Sub => ArithOp::Sub,
                BinaryOp::Mul => ArithOp::Mul,
                BinaryOp::Div => ArithOp::Div,
                _ => ArithOp::Rem,
            };
            (Node::Arith(arith, l, r, span), T::Number)
        }
    })
}

/// Builds a regex from a rules file, with limits so a hostile pattern cannot exhaust memory.
pub fn build_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).nest_limit(REGEX_NEST_LIMIT).build().map_err(|e| match e {
        regex::Error::CompiledTooBig(limit) => format!("regex is too large (limit {limit} bytes compiled)"),
        other => {
            let text = other.to_string();
            // The regex crate draws the pattern with a caret over several lines; keep its last line.
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(&text).trim();
            format!("invalid regex: {}", last.trim_start_matches("error: "))
        }
    })
}

impl Node {
    /// See [`crate::expr::Program::equality_guard`]. Numeric strings are left out: they also
    /// equal numbers, so a lookup by text would miss matches.
    pub fn equality_guard(&self) -> Option<(&Path, &str)> {
        match self {
            Node::And(left, _) => left.equality_guard(),
            Node::Compare(CmpOp::Eq, l, r, _) => match (&**l, &**r) {
                (Node::Path(path, _), Node::Const(Const::Str(text)))
                | (Node::Const(Const::Str(text)), Node::Path(path, _))
                    if crate::expr::eval::json_number(text).is_none() =>
                {
                    Some((path, text))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Calls `f` with every path in the expression, left to right.
    pub fn visit_paths<'a>(&'a self, f: &mut impl FnMut(&'a Path, Span)) {
        match self {
            Node::Const(_) => {}
            Node::Path(path, span) => f(path, *span),
            Node::Neg(inner, _) | Node::Not(inner, _) | Node::Matches(inner, _, _) => inner.visit_paths(f),
            Node::Arith(_, l, r, _)
            | Node::Compare(_, l, r, _)
            | Node::Contains(l, r, _)
            | Node::And(l, r)
            | Node::Or(l, r) => {
                l.visit_paths(f);
                r.visit_paths(f);
            }
        }
    }
}
