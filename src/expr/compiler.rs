//! Compiler: a syntax tree to the form the evaluator runs.
//!
//! Paths are resolved to their root, regexes are built once, list literals become set lookups,
//! and every operand whose type is fixed at load (a literal, an arithmetic result, a comparison)
//! is checked against its operator. In a formula a mismatch (`'100' * 2`) is a load error. In a
//! condition it is a warning and the part at fault is compiled to "always unknown": the original
//! loaded such files (`payload.s > 'a'` was an evaluation error that skipped the branch), and
//! they must keep loading. A literal where a condition belongs (`NOT 5`, `1` alone) stays an
//! error, as the original's grammar refused it.

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::ast::{BinaryOp, Expr, Function, Literal, MemberField, Path, Span, UnaryOp};
use super::set::ConstSet;
use crate::calendar::Period;

/// What an expression is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A condition: must give true or false.
    Condition,
    /// A points formula: must give a number.
    Formula,
    /// The `ratio` of a reversal: must give a number, and may read the `original` event.
    Ratio,
}

/// A compile error, or (for [`Compiled::warnings`]) a part that can never be decided.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct CompileError {
    /// Where the problem is.
    pub span: Span,
    /// What is wrong.
    pub message: String,
}

/// A compiled expression and the parts of it that its types make always unknown.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The root node.
    pub root: Node,
    /// One per [`Node::Never`], indexed by its number: why that part is always unknown.
    pub warnings: Vec<CompileError>,
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
    /// A list literal, as JSON so that it compares like an array of the event.
    Array(Box<[Value]>),
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

/// The list of `x in list`.
#[derive(Debug, Clone)]
pub enum List {
    /// A list literal, compiled for lookups (boxed: it is large, and every node pays for the
    /// largest variant).
    Const(Box<ConstSet>),
    /// Anything else (a path to an array), read at run time.
    Value(Box<Node>),
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
    /// `in` (or, when `negated`, `not in`).
    In {
        /// The value looked for.
        needle: Box<Node>,
        /// Where it is looked for.
        list: List,
        /// `not in`.
        negated: bool,
        /// The whole comparison.
        span: Span,
    },
    /// `AND`.
    And(Box<Node>, Box<Node>),
    /// `OR`.
    Or(Box<Node>, Box<Node>),
    /// `NOT`.
    Not(Box<Node>, Span),
    /// A part whose types can never fit its operator: always unknown. The number indexes
    /// [`Compiled::warnings`], which says why.
    Never(u16, Span),
    /// `name(arguments)`.
    Call(Function, Box<[Node]>, Span),
    /// A value of the actor's state before the event (boxed: it is large and rare).
    Member(Box<MemberQuery>, Span),
    /// A path into the event a reversal takes back.
    Original(Path, Span),
}

impl MemberQuery {
    /// The event type whose history it reads (`member.balance` reads none).
    pub fn event_type(&self) -> Option<&str> {
        match self {
            MemberQuery::Count { event_type, .. }
            | MemberQuery::Sum { event_type, .. }
            | MemberQuery::First { event_type }
            | MemberQuery::Streak { event_type, .. }
            | MemberQuery::DaysSince { event_type } => Some(event_type),
            MemberQuery::Points(_) => None,
        }
    }
}

/// What of a member's history a member function reads: the events of a type (lower-cased), and
/// for `sum()` the payload path it adds up.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRead {
    /// The event type, lower-cased.
    pub event_type: String,
    /// The path `sum()` adds up over those events.
    pub sum: Option<Path>,
}

/// What a member function or value reads of the actor's state, checked at load.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberQuery {
    /// `count(type, period)`.
    Count {
        /// The event type, lower-cased.
        event_type: Box<str>,
        /// The period holding the event time.
        period: Period,
    },
    /// `sum(type, path, period)`.
    Sum {
        /// The event type, lower-cased.
        event_type: Box<str>,
        /// The payload path summed.
        path: Path,
        /// The period holding the event time.
        period: Period,
    },
    /// `first(type)`.
    First {
        /// The event type, lower-cased.
        event_type: Box<str>,
    },
    /// `streak(type, day | week)`.
    Streak {
        /// The event type, lower-cased.
        event_type: Box<str>,
        /// `Day` or `Week`.
        period: Period,
    },
    /// `days_since(type)`.
    DaysSince {
        /// The event type, lower-cased.
        event_type: Box<str>,
    },
    /// `member.balance`, `member.pending`, `member.tier`.
    Points(MemberField),
}

/// What is known of a node's type at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StaticType {
    Bool,
    Number,
    Str,
    Null,
    Array,
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
            StaticType::Array => "a list",
            StaticType::Any => "a value",
        }
    }
}

/// Compiles a parsed expression for a purpose.
pub fn compile(expr: &Expr, purpose: Purpose) -> Result<Compiled, CompileError> {
    let mut compiler = Compiler { purpose, warnings: Vec::new() };
    let (node, ty) = compiler.node(expr)?;
    let fits = match purpose {
        Purpose::Condition => matches!(ty, StaticType::Bool | StaticType::Any),
        Purpose::Formula | Purpose::Ratio => matches!(ty, StaticType::Number | StaticType::Any),
    };
    let root = if fits {
        node
    } else {
        let message = match purpose {
            Purpose::Condition => format!("a condition must be true or false, but this expression is {}", ty.noun()),
            Purpose::Formula => format!("a formula must give a number, but this expression is {}", ty.noun()),
            Purpose::Ratio => format!("a ratio must give a number, but this expression is {}", ty.noun()),
        };
        if matches!(expr, Expr::Literal(..)) {
            return Err(CompileError { span: expr.span(), message });
        }
        compiler.mismatch(expr, message, expr.span())?.0
    };
    Ok(Compiled { root, warnings: compiler.warnings })
}

/// Compiles one expression, collecting the warnings of a condition.
struct Compiler {
    purpose: Purpose,
    warnings: Vec<CompileError>,
}

/// A compiled node and its type at load.
type Typed = (Node, StaticType);

impl Compiler {
    /// A part whose types do not fit: a load error in a formula, or when a literal stands where
    /// a condition belongs; otherwise an always-unknown node covering `whole`, with a warning
    /// placed at the operand at fault.
    fn mismatch(&mut self, operand: &Expr, message: String, whole: Span) -> Result<Typed, CompileError> {
        let error = CompileError { span: operand.span(), message };
        if self.purpose != Purpose::Condition {
            return Err(error);
        }
        let index = u16::try_from(self.warnings.len()).map_err(|_| error.clone())?;
        self.warnings.push(error);
        Ok((Node::Never(index, whole), StaticType::Any))
    }

    /// `None` when the operand's type fits; otherwise the operation `whole` is a
    /// [`Compiler::mismatch`].
    fn misfit(
        &mut self,
        operand: &Expr,
        ty: StaticType,
        allowed: &[StaticType],
        what: &str,
        whole: Span,
    ) -> Result<Option<Typed>, CompileError> {
        if ty == StaticType::Any || allowed.contains(&ty) {
            return Ok(None);
        }
        self.mismatch(operand, format!("{what}, but `{operand}` is {}", ty.noun()), whole).map(Some)
    }

    /// An operand of `AND`, `OR` or `NOT`: a literal there is an error (the original's grammar
    /// refused it); another value that is not a condition is an always-unknown operand.
    fn condition_operand(&mut self, operand: &Expr, what: &str) -> Result<Node, CompileError> {
        let (node, ty) = self.node(operand)?;
        if matches!(operand, Expr::Literal(..)) && ty != StaticType::Bool {
            let message = format!("{what}, but `{operand}` is {}", ty.noun());
            return Err(CompileError { span: operand.span(), message });
        }
        Ok(match self.misfit(operand, ty, &[StaticType::Bool], what, operand.span())? {
            Some((never, _)) => never,
            None => node,
        })
    }

    fn node(&mut self, expr: &Expr) -> Result<Typed, CompileError> {
        use StaticType as T;
        Ok(match expr {
            Expr::Literal(lit, _) => match lit {
                Literal::Number(n) => (Node::Const(Const::Number(*n)), T::Number),
                Literal::Str(s) => (Node::Const(Const::Str(s.as_str().into())), T::Str),
                Literal::Bool(b) => (Node::Const(Const::Bool(*b)), T::Bool),
                Literal::Null => (Node::Const(Const::Null), T::Null),
                Literal::Array(items) => (Node::Const(Const::Array(items.iter().map(json_of).collect())), T::Array),
            },
            Expr::Path(Path::MetaNeverPresent(_), span) => {
                let message = format!(
                    "meta values are strings, so `{expr}` never has a value: meta takes one key, as in meta.key"
                );
                return self.mismatch(expr, message, *span);
            }
            Expr::Path(Path::Member(field), span) => {
                let ty = if *field == MemberField::Tier { T::Any } else { T::Number };
                (Node::Member(Box::new(MemberQuery::Points(*field)), *span), ty)
            }
            Expr::Path(Path::Original(path), span) => {
                if self.purpose != Purpose::Ratio {
                    let message = "`original` is read only in the `ratio` of a reverse_points action".to_owned();
                    return Err(CompileError { span: *span, message });
                }
                (Node::Original((**path).clone(), *span), T::Any)
            }
            Expr::Path(path, span) => (Node::Path(path.clone(), *span), T::Any),
            Expr::Unary(UnaryOp::Neg, operand, span) => {
                let (node, ty) = self.node(operand)?;
                if let Some(never) = self.misfit(operand, ty, &[T::Number], "unary `-` needs a number", *span)? {
                    return Ok(never);
                }
                (Node::Neg(Box::new(node), *span), T::Number)
            }
            Expr::Unary(UnaryOp::Not, operand, span) => {
                let node = self.condition_operand(operand, "`NOT` needs a condition")?;
                (Node::Not(Box::new(node), *span), T::Bool)
            }
            Expr::Binary(op, left, right, span) => self.binary(*op, left, right, *span)?,
            Expr::Call(function, args, span) => self.call(*function, args, *span)?,
        })
    }

    /// A function call: the time functions take nothing; `len` a string, list or object;
    /// `lower` and `upper` a string; the others numbers.
    fn call(&mut self, function: Function, args: &[Expr], span: Span) -> Result<Typed, CompileError> {
        use StaticType as T;
        if function.reads_member() {
            let query = member_query(function, args)?;
            let ty = if function == Function::First { T::Bool } else { T::Number };
            return Ok((Node::Member(Box::new(query), span), ty));
        }
        let name = function.name();
        let (allowed, what, result): (&[T], String, T) = match function {
            Function::DayOfWeek => (&[], String::new(), T::Str),
            Function::Hour => (&[], String::new(), T::Number),
            Function::Len => (&[T::Str, T::Array], format!("`{name}` counts a string, a list or an object"), T::Number),
            Function::Lower | Function::Upper => (&[T::Str], format!("`{name}` needs a string"), T::Str),
            _ => (&[T::Number], format!("`{name}` needs numbers"), T::Number),
        };
        let mut nodes = Vec::with_capacity(args.len());
        for arg in args {
            let (node, ty) = self.node(arg)?;
            if let Some(never) = self.misfit(arg, ty, allowed, &what, span)? {
                return Ok(never);
            }
            nodes.push(node);
        }
        Ok((Node::Call(function, nodes.into_boxed_slice(), span), result))
    }

    fn binary(&mut self, op: BinaryOp, left: &Expr, right: &Expr, span: Span) -> Result<Typed, CompileError> {
        use StaticType as T;
        let symbol = op.symbol();
        match op {
            BinaryOp::Matches => return self.matches(left, right, span),
            BinaryOp::In | BinaryOp::NotIn => return self.membership(op, left, right, span),
            BinaryOp::And | BinaryOp::Or => {
                let what = format!("`{symbol}` joins conditions");
                let l = Box::new(self.condition_operand(left, &what)?);
                let r = Box::new(self.condition_operand(right, &what)?);
                let node = if op == BinaryOp::And { Node::And(l, r) } else { Node::Or(l, r) };
                return Ok((node, T::Bool));
            }
            _ => {}
        }
        let (l, lt) = self.node(left)?;
        let (r, rt) = self.node(right)?;
        let (l, r) = (Box::new(l), Box::new(r));
        let (left_types, right_types, what): (&[T], &[T], String) = match op {
            BinaryOp::Eq | BinaryOp::Ne => (&[], &[], String::new()),
            BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => {
                (&[T::Number], &[T::Number], format!("`{symbol}` compares numbers"))
            }
            BinaryOp::Contains if lt == T::Str => {
                (&[T::Str], &[T::Str], "`contains` on a string looks for a string".into())
            }
            BinaryOp::Contains => (&[T::Str, T::Array], &[], "`contains` searches a string or a list".into()),
            _ => (&[T::Number], &[T::Number], format!("`{symbol}` needs numbers")),
        };
        if !what.is_empty() {
            if let Some(never) = self.misfit(left, lt, left_types, &what, span)? {
                return Ok(never);
            }
            if !right_types.is_empty() {
                if let Some(never) = self.misfit(right, rt, right_types, &what, span)? {
                    return Ok(never);
                }
            }
        }
        Ok(match op {
            BinaryOp::Eq => (Node::Compare(CmpOp::Eq, l, r, span), T::Bool),
            BinaryOp::Ne => (Node::Compare(CmpOp::Ne, l, r, span), T::Bool),
            BinaryOp::Gt => (Node::Compare(CmpOp::Gt, l, r, span), T::Bool),
            BinaryOp::Ge => (Node::Compare(CmpOp::Ge, l, r, span), T::Bool),
            BinaryOp::Lt => (Node::Compare(CmpOp::Lt, l, r, span), T::Bool),
            BinaryOp::Le => (Node::Compare(CmpOp::Le, l, r, span), T::Bool),
            BinaryOp::Contains => (Node::Contains(l, r, span), T::Bool),
            BinaryOp::Add => (Node::Arith(ArithOp::Add, l, r, span), T::Number),
            BinaryOp::Sub => (Node::Arith(ArithOp::Sub, l, r, span), T::Number),
            BinaryOp::Mul => (Node::Arith(ArithOp::Mul, l, r, span), T::Number),
            BinaryOp::Div => (Node::Arith(ArithOp::Div, l, r, span), T::Number),
            _ => (Node::Arith(ArithOp::Rem, l, r, span), T::Number),
        })
    }

    fn matches(&mut self, left: &Expr, right: &Expr, span: Span) -> Result<Typed, CompileError> {
        let Expr::Literal(Literal::Str(pattern), _) = right else {
            return Err(CompileError {
                span: right.span(),
                message: "`matches` needs a string literal pattern, such as 'LOY-[0-9]+'".into(),
            });
        };
        let regex = build_regex(pattern).map_err(|message| CompileError { span: right.span(), message })?;
        let (subject, ty) = self.node(left)?;
        if let Some(never) = self.misfit(left, ty, &[StaticType::Str], "`matches` needs a string to search", span)? {
            return Ok(never);
        }
        Ok((Node::Matches(Box::new(subject), regex, span), StaticType::Bool))
    }

    fn membership(&mut self, op: BinaryOp, left: &Expr, right: &Expr, span: Span) -> Result<Typed, CompileError> {
        let (needle, _) = self.node(left)?;
        let list = match right {
            Expr::Literal(Literal::Array(items), _) => {
                let items: Vec<Value> = items.iter().map(json_of).collect();
                List::Const(Box::new(ConstSet::new(&items)))
            }
            _ => {
                let (list, ty) = self.node(right)?;
                let what = format!("`{}` looks in a list", op.symbol());
                if let Some(never) = self.misfit(right, ty, &[StaticType::Array], &what, span)? {
                    return Ok(never);
                }
                List::Value(Box::new(list))
            }
        };
        let node = Node::In { needle: Box::new(needle), list, negated: op == BinaryOp::NotIn, span };
        Ok((node, StaticType::Bool))
    }
}

/// A member function's arguments, which are string literals checked here: a type, a period
/// (`streak` takes `day` or `week`), and for `sum` a payload path.
fn member_query(function: Function, args: &[Expr]) -> Result<MemberQuery, CompileError> {
    let name = function.name();
    let literal = |i: usize, what: &str, example: &str| match args.get(i) {
        Some(Expr::Literal(Literal::Str(text), _)) => Ok(text.as_str()),
        other => Err(CompileError {
            span: other.map_or(Span::default(), Expr::span),
            message: format!("the {what} of {name}() must be a string literal such as {example}"),
        }),
    };
    let at = |i: usize| args.get(i).map_or(Span::default(), Expr::span);
    let event_type = literal(0, "event type", "'purchase'")?;
    if event_type.trim().is_empty() {
        return Err(CompileError { span: at(0), message: format!("the event type of {name}() must not be empty") });
    }
    let event_type: Box<str> = event_type.to_lowercase().into();
    let period = |i: usize| {
        let text = literal(i, "period", "'month' or '30d'")?;
        Period::parse(text).map_err(|message| CompileError { span: at(i), message })
    };
    Ok(match function {
        Function::Count => MemberQuery::Count { event_type, period: period(1)? },
        Function::First => MemberQuery::First { event_type },
        Function::DaysSince => MemberQuery::DaysSince { event_type },
        Function::Streak => match period(1)? {
            p @ (Period::Day | Period::Week) => MemberQuery::Streak { event_type, period: p },
            other => {
                let message = format!("streak() counts days or weeks, not `{other}`: write 'day' or 'week'");
                return Err(CompileError { span: at(1), message });
            }
        },
        _ => {
            let text = literal(1, "path", "'payload.amount'")?;
            let path = match super::parser::parse(text) {
                Ok(Expr::Path(path @ Path::Payload(_), _)) => path,
                _ => {
                    let message =
                        format!("the path of sum() must be a payload path such as 'payload.amount', got '{text}'");
                    return Err(CompileError { span: at(1), message });
                }
            };
            MemberQuery::Sum { event_type, path, period: period(2)? }
        }
    })
}

/// A literal as JSON (numbers are finite: the lexer refuses others).
fn json_of(literal: &Literal) -> Value {
    match literal {
        Literal::Number(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Literal::Str(s) => Value::String(s.clone()),
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Null => Value::Null,
        Literal::Array(items) => Value::Array(items.iter().map(json_of).collect()),
    }
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

    /// Adds what of the member's history the expression reads.
    pub fn history_reads(&self, out: &mut Vec<HistoryRead>) {
        self.each_node(&mut |node| {
            if let Node::Member(query, _) = node
                && let Some(event_type) = query.event_type()
            {
                let sum = match &**query {
                    MemberQuery::Sum { path, .. } => Some(path.clone()),
                    _ => None,
                };
                out.push(HistoryRead { event_type: event_type.to_owned(), sum });
            }
        });
    }

    /// True when the expression reads the actor's state before the event.
    pub fn reads_member(&self) -> bool {
        let mut reads = false;
        self.each_node(&mut |node| reads |= matches!(node, Node::Member(..)));
        reads
    }

    /// Calls `f` with every path in the expression, left to right.
    pub fn visit_paths<'a>(&'a self, f: &mut impl FnMut(&'a Path, Span)) {
        self.each_node(&mut |node| {
            if let Node::Path(path, span) = node {
                f(path, *span);
            }
        });
    }

    /// Calls `f` with this node and every node under it, depth first, left to right.
    fn each_node<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        f(self);
        match self {
            Node::Const(_) | Node::Never(..) | Node::Member(..) | Node::Path(..) | Node::Original(..) => {}
            Node::Neg(inner, _) | Node::Not(inner, _) | Node::Matches(inner, _, _) => inner.each_node(f),
            Node::In { needle, list, .. } => {
                needle.each_node(f);
                if let List::Value(list) = list {
                    list.each_node(f);
                }
            }
            Node::Call(_, args, _) => args.iter().for_each(|arg| arg.each_node(f)),
            Node::Arith(_, l, r, _)
            | Node::Compare(_, l, r, _)
            | Node::Contains(l, r, _)
            | Node::And(l, r)
            | Node::Or(l, r) => {
                l.each_node(f);
                r.each_node(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every node is as large as the largest variant: keep the tree compact for the cache.
    #[test]
    fn nodes_stay_small() {
        assert!(std::mem::size_of::<super::Node>() <= 64, "{}", std::mem::size_of::<super::Node>());
    }
}
